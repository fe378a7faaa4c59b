#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "list.h"
#include "log.h"
#include "os.h"

/* libwebsockets is loaded when the first connection is made (dlopen), as
 * libcurl is: a program that opens no WebSocket does not pay for it. Its
 * libuv event library is a plugin libwebsockets loads itself. */
static struct {
    struct lws_context *(*create_context)(const struct lws_context_creation_info *);
    void (*context_destroy)(struct lws_context *);
    struct lws *(*client_connect_via_info)(const struct lws_client_connect_info *);
    int (*callback_on_writable)(struct lws *);
    int (*write)(struct lws *, unsigned char *, size_t, enum lws_write_protocol);
    void (*close_reason)(struct lws *, enum lws_close_status, unsigned char *, size_t);
    void *(*get_opaque_user_data)(const struct lws *);
    void (*set_opaque_user_data)(struct lws *, void *);
    int (*is_final_fragment)(struct lws *);
    size_t (*remaining_packet_payload)(struct lws *);
    int (*frame_is_binary)(struct lws *);
    void (*set_timeout)(struct lws *, enum pending_timeout, int);
    void (*set_log_level)(int, void (*)(int, const char *));
    void (*cancel_service)(struct lws_context *);
} L;

/* What libwebsockets last said of a failed TLS handshake ("SSL error:
 * self-signed certificate ..."): its connection error says only "connect
 * SSL err 1", so this becomes the reason the caller is given. */
static char tls_why[160];

/* libwebsockets' own lines go to kiro's log, errors and warnings only; a
 * TLS failure is the caller's to report, not logged twice. */
static void lws_line(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    const char *ssl = strstr(line, "SSL error: ");
    if (ssl) {
        ssl += strlen("SSL error: ");
        size_t m = strcspn(ssl, "(\r\n");
        while (m && ssl[m - 1] == ' ')
            m--;
        snprintf(tls_why, sizeof tls_why, "%.*s", (int)m, ssl);
        klog(KLOG_DEBUG, "kiro.ws", "libwebsockets: %.*s", (int)n, line);
        return;
    }
    klog(level == LLL_ERR ? KLOG_ERROR : KLOG_WARN, "kiro.ws", "libwebsockets: %.*s", (int)n, line);
}

/* 0, or -1 with why in err. */
static int load_lws(char *err, size_t errlen)
{
    static kos_lib lib = { "libwebsockets.so.17", "WebSocket", 0, "" };
    static const kos_sym syms[] = {
#define SYM(f) { (void **)&L.f, "lws_" #f }
        SYM(create_context),
        SYM(context_destroy),
        SYM(client_connect_via_info),
        SYM(callback_on_writable),
        SYM(write),
        SYM(close_reason),
        SYM(get_opaque_user_data),
        SYM(set_opaque_user_data),
        SYM(is_final_fragment),
        SYM(remaining_packet_payload),
        SYM(frame_is_binary),
        SYM(set_timeout),
        SYM(set_log_level),
        SYM(cancel_service),
#undef SYM
    };
    int first = lib.state == 0;
    if (kos_lib_load(&lib, syms, sizeof syms / sizeof *syms, err, errlen) != 0)
        return -1;
    if (first)
        L.set_log_level(LLL_ERR | LLL_WARN, lws_line);
    return 0;
}

struct kws {
    uv_loop_t *loop;
    struct lws_context *ctx;
    uv_timer_t reaper; /* kws_free: the context goes outside any lws callback */
    int reap_steps;
    klist conns; /* kws_conn.link: live */
};

/* A message waiting to be written, with the room lws wants before it. */
typedef struct out {
    struct out *next;
    size_t n;
    int binary;
    unsigned char data[];
} out;

struct kws_conn {
    kws *w;
    struct lws *wsi; /* NULL once ended (closed reported) */
    kws_sink sink;
    kbuf in; /* the message being assembled */
    size_t max_bytes;
    out *head, **tail;
    int close_code; /* ours to send (closing) or the peer's (received) */
    char close_reason[124];
    int closing, starting;
    char start_err[256];
    klist link;
    struct url_parts *u;            /* the URL, until libwebsockets has it */
    uv_getaddrinfo_t gai;           /* its host looked up (libuv's thread pool) */
    struct addrinfo *ais, *next_ai; /* its addresses, and the next to try */
    int resolving, released;        /* released while resolving: freed by resolved() */
    int established;
};

static void drop_queue(kws_conn *c);

static void conn_free(kws_conn *c)
{
    drop_queue(c);
    kbuf_free(&c->in);
    if (c->ais)
        uv_freeaddrinfo(c->ais);
    free(c->u);
    free(c);
}

static void drop_queue(kws_conn *c)
{
    for (out *o = c->head, *next; o; o = next) {
        next = o->next;
        free(o);
    }
    c->head = NULL;
    c->tail = &c->head;
}

/* The end, reported once: lws lets go of the connection for us. */
static void finish(kws_conn *c, int code, const char *reason)
{
    if (c->wsi)
        L.set_opaque_user_data(c->wsi, NULL);
    c->wsi = NULL;
    if (c->starting) { /* inside start(): it says why, and its caller goes on (the next address) */
        snprintf(c->start_err, sizeof c->start_err, "%s", reason);
        return;
    }
    klist_remove(&c->link);
    drop_queue(c);
    kbuf_free(&c->in);
    if (c->sink.closed)
        c->sink.closed(c->sink.ud, code, reason);
}

static int try_next(kws_conn *c);

/* wsi goes at once: libwebsockets' own timer list is looked at when it is
 * next woken, which cancel_service does now (else up to 30 s later). */
static void kill_wsi(struct lws_context *ctx, struct lws *wsi)
{
    L.set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
    L.cancel_service(ctx);
}

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    kws_conn *c = wsi ? L.get_opaque_user_data(wsi) : NULL;
    if (!c)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        c->established = 1;
        if (c->head)
            L.callback_on_writable(wsi);
        c->sink.open(c->sink.ud);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (c->in.len + len > c->max_bytes) {
            static const char why[] = "message too big";
            L.close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)why, sizeof why - 1);
            finish(c, 1009, why);
            return -1;
        }
        kbuf_append(&c->in, in, len);
        if (L.is_final_fragment(wsi) && L.remaining_packet_payload(wsi) == 0) {
            kbuf msg = c->in;
            c->in = (kbuf){ 0 };
            c->sink.message(c->sink.ud, msg.data ? msg.data : "", msg.len, L.frame_is_binary(wsi));
            kbuf_free(&msg);
        }
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (c->closing) {
            L.close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                           strlen(c->close_reason));
            return -1;
        }
        if (c->head) {
            out *o = c->head;
            if (!(c->head = o->next))
                c->tail = &c->head;
            int n = L.write(wsi, o->data + LWS_PRE, o->n, o->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
            int short_write = n < (int)o->n;
            free(o);
            if (short_write)
                return -1;
            if (c->head)
                L.callback_on_writable(wsi);
        }
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            const unsigned char *p = in;
            c->close_code = p[0] << 8 | p[1];
            size_t n = len - 2 < sizeof c->close_reason - 1 ? len - 2 : sizeof c->close_reason - 1;
            memcpy(c->close_reason, p + 2, n);
            c->close_reason[n] = 0;
        }
        return 0; /* lws answers the close */
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        const char *why = in && len ? (const char *)in : "connection failed";
        if (!c->established && c->next_ai && !c->closing) { /* the host's next address */
            L.set_opaque_user_data(wsi, NULL);
            c->wsi = NULL;
            if (try_next(c) == 0)
                return 0;
            why = c->start_err;
        }
        char tls[200];
        if (strstr(why, "SSL") && tls_why[0]) {
            snprintf(tls, sizeof tls, "tls: %s", tls_why);
            why = tls;
        }
        tls_why[0] = 0;
        finish(c, 1006, why);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (wsi != c->wsi && !c->starting) /* (an address given up for the next) */
            return 0;
        if (c->close_code)
            finish(c, c->close_code, c->close_reason);
        else
            finish(c, 1006, "connection lost");
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    { "kiro", on_lws, 0, 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};

kws *kws_new(uv_loop_t *loop, char *err, size_t errlen)
{
    if (load_lws(err, errlen) != 0)
        return NULL;
    kws *w = kcalloc(1, sizeof *w);
    w->loop = loop;
    klist_init(&w->conns);
    void *loops[1] = { loop };
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = loops;
    info.pcontext = &w->ctx;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    /* libwebsockets ignores SIGPIPE for the whole process; whoever owns
     * the process keeps the disposition it chose (kiro blocks SIGPIPE
     * while its loop runs). */
    struct sigaction old;
    sigaction(SIGPIPE, NULL, &old);
    w->ctx = L.create_context(&info);
    sigaction(SIGPIPE, &old, NULL);
    if (!w->ctx) {
        snprintf(err, errlen,
                 "WebSocket could not start: libwebsockets' libuv event library "
                 "(libwebsockets-evlib-uv) is missing or failed");
        free(w);
        return NULL;
    }
    uv_timer_init(loop, &w->reaper);
    w->reaper.data = w;
    uv_unref((uv_handle_t *)&w->reaper);
    return w;
}

static void reaper_closed(uv_handle_t *h)
{
    free(h->data);
}

static void any_closing(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        *(int *)arg = 1;
}

/* On a foreign loop libwebsockets lets go of its context in steps: the
 * first destroy closes its handles; once the loop has finished closing
 * them (nothing in it is still closing), the second frees its vhosts and
 * the third the context, which sets w->ctx to NULL (info.pcontext). Each
 * step runs from this timer, outside any libwebsockets callback. */
static void reap(uv_timer_t *t)
{
    kws *w = t->data;
    if (w->reap_steps++ == 0) {
        L.context_destroy(w->ctx);
    } else {
        int closing = 0;
        uv_walk(w->loop, any_closing, &closing);
        if (!closing)
            L.context_destroy(w->ctx);
    }
    if (w->ctx && w->reap_steps < 10000)
        uv_timer_start(&w->reaper, reap, 1, 0); /* (0 would run again in this same pass) */
    else
        uv_close((uv_handle_t *)&w->reaper, reaper_closed);
}

void kws_free(kws *w, const char *why)
{
    while (!klist_empty(&w->conns)) {
        kws_conn *c = klist_first(&w->conns, kws_conn, link);
        struct lws *wsi = c->wsi;
        finish(c, 1001, why);
        if (wsi)
            kill_wsi(w->ctx, wsi);
    }
    uv_ref((uv_handle_t *)&w->reaper);
    uv_timer_start(&w->reaper, reap, 0, 0);
}

/* A ws:// or wss:// URL in parts: 0, or -1. host and path point into buf. */
struct url_parts {
    char buf[2048];
    const char *host, *path;
    int port, tls;
};
typedef struct url_parts url_parts;

static int parse_url(const char *url, url_parts *u)
{
    const char *rest;
    if (!strncmp(url, "ws://", 5)) {
        rest = url + 5;
        u->tls = 0;
    } else if (!strncmp(url, "wss://", 6)) {
        rest = url + 6;
        u->tls = 1;
    } else {
        return -1;
    }
    size_t n = strlen(rest);
    if (n + 2 > sizeof u->buf || strpbrk(rest, " \t\r\n"))
        return -1;
    /* buf: "host\0/path" (a path always, "/" when the URL has none) */
    size_t hostlen = strcspn(rest, "/?#");
    memcpy(u->buf, rest, hostlen);
    u->buf[hostlen] = 0;
    char *path = u->buf + hostlen + 1;
    snprintf(path, sizeof u->buf - hostlen - 1, "%s%s", rest[hostlen] == '/' ? "" : "/", rest + hostlen);
    char *hash = strchr(path, '#');
    if (hash)
        *hash = 0;
    char *host = u->buf, *colon;
    if (*host == '[') { /* [v6]:port */
        char *end = strchr(host, ']');
        if (!end)
            return -1;
        *end = 0;
        host++;
        colon = end[1] == ':' ? end + 1 : NULL;
        if (!colon && end[1])
            return -1;
    } else {
        colon = strrchr(host, ':');
    }
    u->port = u->tls ? 443 : 80;
    if (colon) {
        *colon = 0;
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (*e || port < 1 || port > 65535)
            return -1;
        u->port = (int)port;
    }
    if (!*host || strchr(host, '@'))
        return -1;
    u->host = host;
    u->path = path;
    return 0;
}

/* Hands c to libwebsockets, to connect to address (an IP address: the
 * host named in the URL stays its Host header, SNI and the name its
 * certificate is checked against). 0, or -1 with why in c->start_err when
 * the connection could not be started. */
static int start(kws_conn *c, const char *address)
{
    url_parts *u = c->u;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = c->w->ctx;
    ci.address = address;
    ci.port = u->port;
    ci.path = u->path;
    ci.host = u->host;
    ci.origin = u->host;
    ci.ssl_connection = u->tls ? LCCSCF_USE_SSL : 0;
    ci.protocol = NULL; /* no subprotocol asked for */
    ci.local_protocol_name = protocols[0].name;
    ci.ietf_version_or_minus_one = -1;
    ci.opaque_user_data = c;
    ci.pwsi = &c->wsi;
    /* A failure inside the call is reported by the call, not as an event. */
    c->starting = 1;
    c->start_err[0] = 0;
    struct lws *wsi = L.client_connect_via_info(&ci); /* (it copies what it keeps) */
    c->starting = 0;
    if (!wsi || c->start_err[0]) {
        if (!c->start_err[0])
            snprintf(c->start_err, sizeof c->start_err, "could not start the connection");
        if (c->wsi) /* (not reached: lws clears pwsi when it fails) */
            L.set_opaque_user_data(c->wsi, NULL);
        c->wsi = NULL;
        return -1;
    }
    c->wsi = wsi;
    if (c->head)
        L.callback_on_writable(wsi);
    return 0;
}

/* Starts on the host's next address: 0, or -1 with why in c->start_err
 * once none is left that can be started. */
/* Whether a connection to a could begin: 0, or why not (an errno;
 * EADDRNOTAVAIL: no host's address). A multicast or broadcast address
 * cannot take one, and for any other the routing table is asked (a UDP
 * socket's connect sends nothing); when that cannot be asked, the
 * connection is tried. What fails here would fail at once in
 * libwebsockets' connect(), and 4.1 leaves a libuv handle of its own
 * behind on that path. */
static int reachable(const struct addrinfo *a, int port)
{
    struct sockaddr_storage to;
    if (a->ai_addrlen > sizeof to)
        return EINVAL;
    memcpy(&to, a->ai_addr, a->ai_addrlen);
    if (a->ai_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&to;
        if (IN6_IS_ADDR_MULTICAST(&s6->sin6_addr))
            return EADDRNOTAVAIL;
        s6->sin6_port = htons((uint16_t)port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&to;
        if (IN_MULTICAST(ntohl(s4->sin_addr.s_addr)) || s4->sin_addr.s_addr == htonl(INADDR_BROADCAST))
            return EADDRNOTAVAIL;
        s4->sin_port = htons((uint16_t)port);
    }
    int fd = socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int rc = connect(fd, (struct sockaddr *)&to, a->ai_addrlen) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

static int try_next(kws_conn *c)
{
    while (c->next_ai) {
        struct addrinfo *a = c->next_ai;
        c->next_ai = a->ai_next;
        char ip[64] = "";
        const void *addr = a->ai_family == AF_INET6
                               ? (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr
                               : (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr;
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            !inet_ntop(a->ai_family, addr, ip, sizeof ip))
            continue;
        int why = reachable(a, c->u->port);
        if (why) {
            snprintf(c->start_err, sizeof c->start_err, "cannot connect to %s: %s", ip,
                     why == EADDRNOTAVAIL ? "not a host's address" : strerror(why));
            continue;
        }
        if (start(c, ip) == 0)
            return 0;
    }
    if (!c->start_err[0])
        snprintf(c->start_err, sizeof c->start_err, "no address of %s to connect to", c->u->host);
    return -1;
}

/* The host's address came (libwebsockets would look it up itself, blocking
 * the loop: its asynchronous resolver is not in Debian's build). */
static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    kws_conn *c = req->data;
    c->resolving = 0;
    c->ais = c->next_ai = status == 0 ? res : NULL;
    if (status != 0 && res)
        uv_freeaddrinfo(res);
    if (c->released) {
        conn_free(c);
        return;
    }
    if (!klist_linked(&c->link)) /* ended meanwhile (the runtime shut down) */
        return;
    char why[300];
    if (c->closing) {
        finish(c, c->close_code, c->close_reason);
    } else if (status != 0 || !res) {
        snprintf(why, sizeof why, "cannot resolve %s: %s", c->u->host,
                 status ? uv_strerror(status) : "no address");
        finish(c, 1006, why);
    } else if (try_next(c) != 0) {
        snprintf(why, sizeof why, "%s", c->start_err);
        finish(c, 1006, why);
    }
}

kws_conn *kws_connect(kws *w, const char *url, size_t max_bytes, const kws_sink *sink, char *err,
                      size_t errlen)
{
    url_parts *u = kmalloc(sizeof *u);
    if (parse_url(url, u) != 0) {
        snprintf(err, errlen, "not a ws:// or wss:// URL: %s", url);
        free(u);
        return NULL;
    }
    kws_conn *c = kcalloc(1, sizeof *c);
    c->w = w;
    c->sink = *sink;
    c->max_bytes = max_bytes ? max_bytes : 16u << 20;
    c->tail = &c->head;
    c->u = u;
    klist_insert_tail(&w->conns, &c->link);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST; /* an address as it is: no lookup */
    if (getaddrinfo(u->host, NULL, &hints, &c->ais) == 0) {
        c->next_ai = c->ais;
        if (try_next(c) != 0) {
            snprintf(err, errlen, "%s", c->start_err);
            klist_remove(&c->link);
            conn_free(c);
            return NULL;
        }
        return c;
    }
    c->ais = NULL;
    hints.ai_flags = AI_ADDRCONFIG; /* (no IPv6 address tried where there is no IPv6) */
    c->gai.data = c;
    int rc = uv_getaddrinfo(w->loop, &c->gai, resolved, u->host, NULL, &hints);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, uv_strerror(rc));
        klist_remove(&c->link);
        conn_free(c);
        return NULL;
    }
    c->resolving = 1;
    return c;
}

int kws_send(kws_conn *c, const char *p, size_t n, int binary)
{
    if (!klist_linked(&c->link) || c->closing)
        return -1;
    out *o = kmalloc(sizeof *o + LWS_PRE + n);
    o->next = NULL;
    o->n = n;
    o->binary = binary;
    memcpy(o->data + LWS_PRE, p, n);
    *c->tail = o;
    c->tail = &o->next;
    if (c->wsi)
        L.callback_on_writable(c->wsi);
    return 0;
}

void kws_close(kws_conn *c, int code, const char *reason)
{
    if (!klist_linked(&c->link) || c->closing)
        return;
    c->closing = 1;
    c->close_code = code;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason ? reason : "");
    drop_queue(c);
    if (c->wsi)
        L.callback_on_writable(c->wsi);
}

void kws_release(kws_conn *c)
{
    struct lws *wsi = c->wsi;
    c->sink.closed = NULL; /* nothing to report to */
    if (klist_linked(&c->link)) {
        struct lws_context *ctx = c->w->ctx;
        finish(c, 1001, "released");
        if (wsi)
            kill_wsi(ctx, wsi);
    }
    if (c->resolving) { /* the lookup cannot be taken back: its end frees c */
        c->released = 1;
        return;
    }
    conn_free(c);
}
