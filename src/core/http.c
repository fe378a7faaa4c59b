#include "http.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "list.h"
#include "log.h"
#include "os.h"

/* libcurl is loaded when the first request is made (dlopen), not when
 * kiro-rt or kiro.so loads: a program that makes no HTTP request (kiro-rt
 * agent, most scripts) does not pay for loading it and the forty libraries
 * it brings. Its functions are reached through this table. */
static struct {
    CURLcode (*global_init)(long);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
    CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
    CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_cleanup)(CURLM *);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} C;

/* 0, or -1 with why in err. */
static int load_curl(char *err, size_t errlen)
{
    static kos_lib lib = { "libcurl.so.4", "HTTP", 0, "" };
    static int started; /* curl_global_init: 0 not yet, 1 done, -1 failed */
    static const kos_sym syms[] = {
#define SYM(f) { (void **)&C.f, "curl_" #f }
        SYM(global_init),         SYM(multi_init),      SYM(multi_setopt),     SYM(multi_assign),
        SYM(multi_socket_action), SYM(multi_info_read), SYM(multi_add_handle), SYM(multi_remove_handle),
        SYM(multi_cleanup),       SYM(easy_init),       SYM(easy_setopt),      SYM(easy_getinfo),
        SYM(easy_cleanup),        SYM(easy_strerror),   SYM(slist_append),     SYM(slist_free_all),
#undef SYM
    };
    if (kos_lib_load(&lib, syms, sizeof syms / sizeof *syms, err, errlen) != 0)
        return -1;
    if (started == 0)
        started = C.global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 1 : -1;
    if (started < 0) {
        snprintf(err, errlen, "libcurl would not start");
        return -1;
    }
    return 0;
}

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
    C.easy_cleanup(r->easy);
    C.slist_free_all(r->headers);
    kbuf_free(&r->head);
    free(r);
}

/* Out of curl's hands, and freed (no callback). */
static void req_drop(khttp_req *r)
{
    C.multi_remove_handle(r->h->multi, r->easy);
    req_free(r);
}

/* The status and headers, once, before the first body byte or the end. */
static void send_head(khttp_req *r)
{
    if (r->head_sent)
        return;
    r->head_sent = 1;
    long status = 0;
    C.easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
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
    while ((m = C.multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        khttp_req *r = NULL;
        C.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode rc = m->data.result;
        C.multi_remove_handle(h->multi, r->easy);
        if (rc == CURLE_OK)
            send_head(r);
        if (!r->cancelled && r->sink.end) {
            enum khttp_error e = rc == CURLE_OK ? KHTTP_OK : error_of(r, rc);
            const char *msg = e == KHTTP_TOO_BIG ? "the response is larger than max_bytes"
                              : r->err[0]        ? r->err
                                                 : C.easy_strerror(rc);
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
    C.multi_socket_action(h->multi, fd, flags, &running);
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
            C.multi_assign(h->multi, s, NULL);
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
        C.multi_assign(h->multi, s, k);
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
    if (load_curl(err, errlen) != 0)
        return NULL;
    khttp *h = kcalloc(1, sizeof *h);
    h->multi = C.multi_init();
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
    C.multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    C.multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    C.multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    C.multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

khttp_req *khttp_start(khttp *h, const khttp_opts *o, const khttp_sink *sink, char *err, size_t errlen)
{
    khttp_req *r = kcalloc(1, sizeof *r);
    r->h = h;
    r->sink = *sink;
    r->max_bytes = o->max_bytes;
    klist_init(&r->link);
    r->easy = C.easy_init();
    if (!r->easy) {
        free(r);
        snprintf(err, errlen, "libcurl would not make a request");
        return NULL;
    }
    CURL *e = r->easy;
    for (const char *const *p = o->headers; p && *p; p++) {
        struct curl_slist *l = C.slist_append(r->headers, *p);
        if (!l) {
            C.slist_free_all(r->headers);
            C.easy_cleanup(e);
            free(r);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        r->headers = l;
    }
    C.easy_setopt(e, CURLOPT_URL, o->url);
    C.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"); /* no file://, no others */
    C.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    C.easy_setopt(e, CURLOPT_PRIVATE, r);
    C.easy_setopt(e, CURLOPT_ERRORBUFFER, r->err);
    C.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    C.easy_setopt(e, CURLOPT_HEADERDATA, r);
    C.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    C.easy_setopt(e, CURLOPT_WRITEDATA, r);
    C.easy_setopt(e, CURLOPT_USERAGENT, "kiro-rt/" KIRO_VERSION);
    C.easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* what curl can decode */
    if (r->headers)
        C.easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    if (o->timeout_ms)
        C.easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    if (o->body) {
        C.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        C.easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body);
    }
    if (o->method && strcmp(o->method, o->body ? "POST" : "GET") != 0) {
        if (strcmp(o->method, "HEAD") == 0)
            C.easy_setopt(e, CURLOPT_NOBODY, 1L);
        else
            C.easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    }
    if (C.multi_add_handle(h->multi, e) != CURLM_OK) {
        C.slist_free_all(r->headers);
        C.easy_cleanup(e);
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
    C.multi_cleanup(h->multi);   /* closes its sockets (on_socket: REMOVE) */
    klist_foreach (n, &h->socks) /* any it did not say it was done with */
        sock_close(klist_entry(n, sock, link));
    uv_close((uv_handle_t *)&h->timer, timer_closed);
}
