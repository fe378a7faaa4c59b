#include "http.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "list.h"
#include "log.h"

struct khttp {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* curl's timeout; its close frees the client */
    klist reqs;       /* khttp_req.link: under way */
    klist dead;       /* khttp_req.link: cancelled inside curl, removed after */
    klist socks;      /* sock.link: watched */
    int nreqs;
    int in_curl; /* inside curl_multi_socket_action: curl's handles stay put */
};

struct khttp_req {
    khttp *h;
    CURL *easy;
    struct curl_slist *headers;
    khttp_sink sink;
    kbuf head; /* the current response's header block */
    int head_sent, too_big, cancelled;
    size_t max_bytes, got;
    klist link;
    char err[CURL_ERROR_SIZE];
};

/* A socket curl asked us to watch. */
typedef struct sock {
    uv_poll_t poll;
    khttp *h;
    curl_socket_t fd;
    klist link; /* in h->socks */
} sock;

static void sock_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static void sock_close(sock *k)
{
    klist_remove(&k->link);
    uv_poll_stop(&k->poll);
    uv_close((uv_handle_t *)&k->poll, sock_closed);
}

static void req_free(khttp_req *r)
{
    klist_remove(&r->link);
    r->h->nreqs--;
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    kbuf_free(&r->head);
    free(r);
}

/* Out of curl's hands, and freed (no callback). */
static void req_drop(khttp_req *r)
{
    curl_multi_remove_handle(r->h->multi, r->easy);
    req_free(r);
}

/* The status and headers, once, before the first body byte or the end. */
static void send_head(khttp_req *r)
{
    if (r->head_sent)
        return;
    r->head_sent = 1;
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (r->sink.head)
        r->sink.head(r->sink.ud, status, r->head.data ? r->head.data : "", r->head.len);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    khttp_req *r = ud;
    size_t len = size * n;
    if (r->cancelled)
        return 0;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) /* a new response (after 100 Continue): its headers */
        r->head.len = 0;
    else
        kbuf_append(&r->head, p, len);
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    khttp_req *r = ud;
    size_t len = size * n;
    if (r->cancelled)
        return 0; /* curl ends the transfer */
    if (r->max_bytes && r->got + len > r->max_bytes) {
        r->too_big = 1;
        return 0;
    }
    r->got += len;
    send_head(r);
    if (!r->cancelled && r->sink.data)
        r->sink.data(r->sink.ud, p, len);
    return len;
}

static enum khttp_error error_of(const khttp_req *r, CURLcode rc)
{
    if (r->too_big)
        return KHTTP_TOO_BIG;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return KHTTP_TIMEOUT;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return KHTTP_INVALID;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        return KHTTP_TLS;
    default:
        return KHTTP_NETWORK;
    }
}

/* Transfers curl finished: each one's end called back, then freed. */
static void finish(khttp *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        khttp_req *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode rc = m->data.result;
        curl_multi_remove_handle(h->multi, r->easy);
        if (rc == CURLE_OK)
            send_head(r);
        if (!r->cancelled && r->sink.end) {
            enum khttp_error e = rc == CURLE_OK ? KHTTP_OK : error_of(r, rc);
            const char *msg = e == KHTTP_TOO_BIG ? "the response is larger than max_bytes"
                              : r->err[0]        ? r->err
                                                 : curl_easy_strerror(rc);
            r->cancelled = 1; /* nothing more for its sink, whatever end does */
            r->sink.end(r->sink.ud, e, msg);
        }
        req_free(r);
    }
}

/* Lets curl act on a socket (or its timeout), then ends what it finished. */
static void act(khttp *h, curl_socket_t fd, int flags)
{
    int running;
    h->in_curl++;
    curl_multi_socket_action(h->multi, fd, flags, &running);
    h->in_curl--;
    klist_foreach (n, &h->dead)
        req_drop(klist_entry(n, khttp_req, link));
    finish(h);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock *k = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    act(k->h, k->fd, flags);
}

static void on_timeout(uv_timer_t *t)
{
    act(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: what to watch on a socket, or stop. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    khttp *h = userp;
    sock *k = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            curl_multi_assign(h->multi, s, NULL);
            sock_close(k);
        }
        return 0;
    }
    if (!k) {
        k = kcalloc(1, sizeof *k);
        k->h = h;
        k->fd = s;
        if (uv_poll_init_socket(h->loop, &k->poll, s) != 0) {
            free(k);
            return -1;
        }
        k->poll.data = k;
        klist_insert_tail(&h->socks, &k->link);
        curl_multi_assign(h->multi, s, k);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&k->poll, events, on_poll);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when curl wants to act next (-1: no timer). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    khttp *h = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

khttp *khttp_new(uv_loop_t *loop, char *err, size_t errlen)
{
    static int global_ok = -1;
    if (global_ok < 0)
        global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!global_ok) {
        snprintf(err, errlen, "libcurl would not start");
        return NULL;
    }
    khttp *h = kcalloc(1, sizeof *h);
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        snprintf(err, errlen, "libcurl would not start");
        return NULL;
    }
    h->loop = loop;
    klist_init(&h->reqs);
    klist_init(&h->dead);
    klist_init(&h->socks);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

khttp_req *khttp_start(khttp *h, const khttp_opts *o, const khttp_sink *sink, char *err, size_t errlen)
{
    khttp_req *r = kcalloc(1, sizeof *r);
    r->h = h;
    r->sink = *sink;
    r->max_bytes = o->max_bytes;
    klist_init(&r->link);
    r->easy = curl_easy_init();
    if (!r->easy) {
        free(r);
        snprintf(err, errlen, "libcurl would not make a request");
        return NULL;
    }
    CURL *e = r->easy;
    for (const char *const *p = o->headers; p && *p; p++) {
        struct curl_slist *l = curl_slist_append(r->headers, *p);
        if (!l) {
            curl_slist_free_all(r->headers);
            curl_easy_cleanup(e);
            free(r);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        r->headers = l;
    }
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"); /* no file://, no others */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->err);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "kiro-rt/" KIRO_VERSION);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* what curl can decode */
    if (r->headers)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    if (o->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    if (o->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body);
    }
    if (o->method && strcmp(o->method, o->body ? "POST" : "GET") != 0) {
        if (strcmp(o->method, "HEAD") == 0)
            curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        else
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    }
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        curl_slist_free_all(r->headers);
        curl_easy_cleanup(e);
        free(r);
        snprintf(err, errlen, "libcurl would not take the request");
        return NULL;
    }
    klist_insert_tail(&h->reqs, &r->link);
    h->nreqs++;
    return r;
}

void khttp_cancel(khttp_req *r)
{
    r->cancelled = 1;
    khttp *h = r->h;
    if (h->in_curl) { /* curl is using it: out of its hands once it returns */
        klist_remove(&r->link);
        klist_insert_tail(&h->dead, &r->link);
        return;
    }
    req_drop(r);
}

void khttp_end_all(khttp *h, const char *msg)
{
    klist_foreach (n, &h->reqs) {
        khttp_req *r = klist_entry(n, khttp_req, link);
        khttp_sink sink = r->sink;
        khttp_cancel(r);
        if (sink.end)
            sink.end(sink.ud, KHTTP_CANCELLED, msg);
    }
}

int khttp_active(const khttp *h)
{
    return h->nreqs;
}

static void timer_closed(uv_handle_t *t)
{
    free(t->data);
}

void khttp_free(khttp *h)
{
    klist_foreach (n, &h->reqs)
        req_drop(klist_entry(n, khttp_req, link));
    klist_foreach (n, &h->dead)
        req_drop(klist_entry(n, khttp_req, link));
    curl_multi_cleanup(h->multi); /* closes its sockets (on_socket: REMOVE) */
    klist_foreach (n, &h->socks)  /* any it did not say it was done with */
        sock_close(klist_entry(n, sock, link));
    uv_close((uv_handle_t *)&h->timer, timer_closed);
}
