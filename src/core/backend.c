#include "backend.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "oneshot.h"
#include "proto.h"

extern char **environ;

struct kbackend {
    kbackends *set;
    klist link; /* in set->all */
    int refs;
    const char *key; /* the rest of the block holds the key and every string */
    size_t keylen;
    const char *cli, *model;
    char **daemon_argv, **oneshot_argv, **env;
    const kproto_ops *proto;
    const char *session_model; /* ACP: set per session, not on the command line */
    char tag[12];              /* its key, hashed short: tells backends of one CLI apart */
    char **alt_argv;           /* protocol auto, until it is settled: the ACP agent's argv */
    const kproto_ops *alt_proto;
    kpool *pool;       /* its daemons; NULL until the first daemon request */
    uv_timer_t linger; /* unused: how long its pool stays warm */
    uint64_t t_unused; /* when the last reference went */
    kconfig cfg;       /* the runtime's settings, its own over them */
    kbackend_setting *own;
    size_t nown;
    int retired; /* goes as soon as nothing holds it (kbackend_retire) */
};

/* ---- one block ------------------------------------------------------------
 * A backend is one allocation: the struct, its key, its strings and string
 * vectors (its environment points into this process's environ for what it
 * does not change). Laid out twice: once to measure (base NULL), once to
 * fill. Creating and dropping backends by the thousand then leaves no trail
 * of small allocations behind. */

typedef struct layout {
    char *base; /* NULL while measuring */
    size_t used;
} layout;

static void *take(layout *l, size_t n, size_t align)
{
    l->used = (l->used + align - 1) / align * align;
    void *p = l->base ? l->base + l->used : NULL;
    l->used += n;
    return p;
}

static const char *put_str(layout *l, const char *s, size_t n)
{
    char *p = take(l, n + 1, 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static size_t strv_len(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* cli, args..., [--model M], NULL */
static char **put_argv(layout *l, const char *cli, const char *const *args, const char *model)
{
    size_t n = strv_len(args), i = 0;
    char **v = take(l, (n + 4) * sizeof *v, sizeof(void *));
    const char *s = put_str(l, cli, strlen(cli));
    if (v)
        v[i] = (char *)s;
    i++;
    for (size_t k = 0; k < n; k++, i++) {
        s = put_str(l, args[k], strlen(args[k]));
        if (v)
            v[i] = (char *)s;
    }
    if (model && *model) {
        s = put_str(l, "--model", 7);
        if (v)
            v[i] = (char *)s;
        i++;
        s = put_str(l, model, strlen(model));
        if (v)
            v[i] = (char *)s;
        i++;
    }
    if (v)
        v[i] = NULL;
    return v;
}

static size_t name_len(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* Whether the variable kv names is among the NULL-terminated list. */
static int named_in(const char *kv, const char *const *list)
{
    size_t n = name_len(kv);
    for (; list && *list; list++)
        if (name_len(*list) == n && memcmp(*list, kv, n) == 0)
            return 1;
    return 0;
}

static const char *const plain_terminal[] = { "NO_COLOR=1", "TERM=dumb", NULL };

/* This process's environment, the backend's extras over it, and a plain
 * terminal (NO_COLOR=1, TERM=dumb) over both. Inherited entries are
 * pointers into environ; only the extras are copied. */
static char **put_env(layout *l, const char *const *extra)
{
    size_t base = strv_len((const char *const *)environ), ne = strv_len(extra), i = 0;
    char **v = take(l, (base + ne + 3) * sizeof *v, sizeof(void *));
    for (size_t k = 0; k < base; k++)
        if (!named_in(environ[k], extra) && !named_in(environ[k], plain_terminal)) {
            if (v)
                v[i] = environ[k];
            i++;
        }
    for (size_t k = 0; k < ne; k++) {
        if (named_in(extra[k], plain_terminal))
            continue; /* a plain terminal wins */
        const char *s = put_str(l, extra[k], strlen(extra[k]));
        if (v)
            v[i] = (char *)s;
        i++;
    }
    for (size_t k = 0; plain_terminal[k]; k++, i++)
        if (v)
            v[i] = (char *)plain_terminal[k];
    if (v)
        v[i] = NULL;
    return v;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every field, NUL-separated (the environment in sorted order: it is a
 * set): two specs with the same key start the same processes the same way. */
static char *make_key(const kbackend_spec *s, size_t *len)
{
    kbuf k = { 0 };
    const char *parts[] = { s->protocol, s->cli, s->model ? s->model : "",
                            s->session_model ? "session" : "argv" };
    for (size_t i = 0; i < 4; i++)
        kbuf_append(&k, parts[i], strlen(parts[i]) + 1);
    for (const char *const *a = s->daemon_args; a && *a; a++)
        kbuf_append(&k, *a, strlen(*a) + 1);
    kbuf_append(&k, "\x01", 1);
    for (const char *const *a = s->acp_args; a && *a; a++)
        kbuf_append(&k, *a, strlen(*a) + 1);
    kbuf_append(&k, "\x01", 1);
    for (const char *const *a = s->oneshot_args; a && *a; a++)
        kbuf_append(&k, *a, strlen(*a) + 1);
    kbuf_append(&k, "\x01", 1);
    size_t ne = strv_len(s->env);
    const char **env = kcalloc(ne + 1, sizeof *env);
    if (ne)
        memcpy(env, s->env, ne * sizeof *env);
    qsort(env, ne, sizeof *env, cmp_str);
    for (size_t i = 0; i < ne; i++)
        kbuf_append(&k, env[i], strlen(env[i]) + 1);
    free(env);
    kbuf_append(&k, "\x01", 1);
    for (size_t i = 0; i < s->nsettings; i++) { /* offset, size, value */
        const kbackend_setting *o = &s->settings[i];
        kbuf_append(&k, &o->offset, sizeof o->offset);
        kbuf_append(&k, &o->size, sizeof o->size);
        kbuf_append(&k, o->value, o->size);
    }
    *len = k.len;
    return k.data;
}

/* Lays the backend out at l (measuring when l->base is NULL). */
static kbackend *lay_out(layout *l, const kbackend_spec *s, const char *key, size_t klen)
{
    kbackend *b = take(l, sizeof *b, _Alignof(kbackend));
    const char *k = take(l, klen, 1);
    const char *cli = put_str(l, s->cli, strlen(s->cli));
    const char *model = s->model ? put_str(l, s->model, strlen(s->model)) : NULL;
    /* An ACP agent that takes its model per session gets no --model. */
    int acp = strcmp(s->protocol, "acp") == 0;
    const char *argv_model = s->session_model ? NULL : s->model;
    char **dargv = put_argv(l, s->cli, s->daemon_args, acp ? argv_model : s->model);
    char **aargv = strcmp(s->protocol, "auto") == 0 ? put_argv(l, s->cli, s->acp_args, argv_model) : NULL;
    char **oargv = put_argv(l, s->cli, s->oneshot_args, s->model);
    char **env = put_env(l, s->env);
    kbackend_setting *own = take(l, s->nsettings * sizeof *own, _Alignof(kbackend_setting));
    for (size_t i = 0; i < s->nsettings; i++) {
        void *v = take(l, s->settings[i].size, _Alignof(max_align_t));
        if (v) {
            memcpy(v, s->settings[i].value, s->settings[i].size);
            own[i] = (kbackend_setting){ s->settings[i].offset, s->settings[i].size, v };
        }
    }
    if (b) {
        memset(b, 0, sizeof *b);
        memcpy((char *)k, key, klen);
        b->key = k;
        b->keylen = klen;
        b->cli = cli;
        b->model = model;
        b->session_model = s->session_model ? model : NULL;
        b->daemon_argv = dargv;
        b->alt_argv = aargv;
        b->oneshot_argv = oargv;
        b->env = env;
        b->own = own;
        b->nown = s->nsettings;
    }
    return b;
}

/* ---- life ---------------------------------------------------------------- */

static void linger_closed(uv_handle_t *h)
{
    free(h->data); /* the whole block */
}

/* Its pool stops (what waits, if anything, ends with msg) and it goes. */
static void destroy(kbackend *b, const char *msg)
{
    klist_remove(&b->link);
    b->set->count--;
    if (b->pool)
        kpool_close(b->pool, msg);
    b->pool = NULL;
    uv_close((uv_handle_t *)&b->linger, linger_closed);
}

/* How often a retired backend that requests still wait on looks again. */
#define RETIRED_CHECK_MS 100

/* The runtime's settings, its own over them. */
static void settle_config(kbackend *b)
{
    b->cfg = b->set->core->cfg;
    for (size_t i = 0; i < b->nown; i++)
        memcpy((char *)&b->cfg + b->own[i].offset, b->own[i].value, b->own[i].size);
    if (b->cfg.pool_min > b->cfg.pool_max) /* the runtime's minimum over its maximum */
        b->cfg.pool_min = b->cfg.pool_max;
}

static int in_use(const kbackend *b)
{
    return b->refs > 0 || (b->pool && kpool_busy(b->pool));
}

static void on_linger(uv_timer_t *t)
{
    kbackend *b = t->data;
    if (b->refs > 0)
        return;
    if (in_use(b)) { /* nobody names it, but requests still wait on it */
        uv_timer_start(&b->linger, on_linger, b->retired ? RETIRED_CHECK_MS : b->cfg.pool_idle_ms, 0);
        return;
    }
    if (b->retired)
        klog(KLOG_DEBUG, "kiro.provider", "backend %s retired: stopping its daemons", b->cli);
    else
        klog(KLOG_DEBUG, "kiro.provider", "backend %s unused for %llu ms: stopping its daemons", b->cli,
             (unsigned long long)b->cfg.pool_idle_ms);
    destroy(b, "backend closed");
}

/* Room for one more: the backend unused the longest goes now. */
static int make_room(kbackends *set)
{
    kbackend *oldest = NULL;
    klist_foreach (n, &set->all) {
        kbackend *b = klist_entry(n, kbackend, link);
        if (!in_use(b) && (!oldest || b->t_unused < oldest->t_unused))
            oldest = b;
    }
    if (!oldest)
        return -1;
    klog(KLOG_DEBUG, "kiro.provider", "max_backends reached: backend %s goes", oldest->cli);
    destroy(oldest, "backend closed");
    return 0;
}

kbackend *kbackend_get(kbackends *set, const kbackend_spec *spec, char *err, size_t errlen)
{
    int detect = strcmp(spec->protocol, "auto") == 0;
    const kproto_ops *proto = detect ? &kproto_jsonl : kproto_find(spec->protocol);
    if (!proto) {
        snprintf(err, errlen, "unknown protocol '%s'", spec->protocol);
        return NULL;
    }
    size_t klen;
    char *key = make_key(spec, &klen);
    klist_foreach (n, &set->all) {
        kbackend *b = klist_entry(n, kbackend, link);
        if (b->keylen == klen && memcmp(b->key, key, klen) == 0) {
            free(key);
            kbackend_ref(b);
            return b;
        }
    }
    if (set->count >= set->core->cfg.max_backends && make_room(set) != 0) {
        free(key);
        snprintf(err, errlen, "%d backends in use (max_backends); none is free to make room", set->count);
        return NULL;
    }
    layout l = { NULL, 0 };
    lay_out(&l, spec, key, klen);
    l.base = kmalloc(l.used);
    l.used = 0;
    kbackend *b = lay_out(&l, spec, key, klen);
    free(key);
    b->set = set;
    b->refs = 1;
    b->proto = proto;
    b->alt_proto = detect ? &kproto_acp : NULL;
    uint32_t h = 2166136261u; /* FNV-1a of the key */
    for (size_t i = 0; i < b->keylen; i++)
        h = (h ^ (unsigned char)b->key[i]) * 16777619u;
    snprintf(b->tag, sizeof b->tag, "%08x", (unsigned)h);
    settle_config(b);
    uv_timer_init(set->core->loop, &b->linger);
    b->linger.data = b;
    klist_insert_tail(&set->all, &b->link);
    if (++set->count > set->peak)
        set->peak = set->count;
    return b;
}

void kbackend_ref(kbackend *b)
{
    if (b->refs++ == 0)
        uv_timer_stop(&b->linger);
    b->retired = 0; /* named again */
}

void kbackend_unref(kbackend *b)
{
    assert(b->refs > 0);
    if (--b->refs > 0)
        return;
    b->t_unused = uv_now(b->set->core->loop);
    uv_timer_start(&b->linger, on_linger, b->retired ? 0 : b->cfg.pool_idle_ms, 0);
}

void kbackend_retire(kbackend *b)
{
    b->retired = 1;
    if (b->refs == 0)
        uv_timer_start(&b->linger, on_linger, 0, 0);
}

const kconfig *kbackend_config(const kbackend *b)
{
    return &b->cfg;
}

void kbackends_configure(kbackends *set)
{
    klist_foreach (n, &set->all) {
        kbackend *b = klist_entry(n, kbackend, link);
        settle_config(b);
        if (b->pool)
            kpool_configure(b->pool, &b->cfg);
    }
}

const char *kbackend_key(const kbackend *b, size_t *len)
{
    *len = b->keylen;
    return b->key;
}

const char *kbackend_tag(const kbackend *b)
{
    return b->tag;
}

/* Its pool found which protocol the CLI speaks (protocol auto): the
 * backend's next pools start that way at once. */
static void protocol_settled(void *ud, char *const *argv, const kproto_ops *proto)
{
    kbackend *b = ud;
    b->daemon_argv = (char **)argv;
    b->proto = proto;
    b->alt_argv = NULL;
    b->alt_proto = NULL;
}

static kpool *pool_of(kbackend *b)
{
    if (!b->pool) {
        kpool_spec spec = { b->cli,   b->model,         b->daemon_argv, b->env,
                            b->proto, b->alt_argv,      b->alt_proto,   protocol_settled,
                            b,        b->session_model, b->tag,         &b->cfg };
        b->pool = kpool_new(b->set->core, &spec);
    }
    return b->pool;
}

void kbackend_warm(kbackend *b)
{
    kpool_configure(pool_of(b), &b->cfg); /* which starts pool_min daemons */
}

void kbackend_submit_daemon(kbackend *b, kreq *r)
{
    kcore *core = b->set->core;
    pool_of(b);
    core->stats.daemon_requests++;
    kpool_submit(b->pool, r);
}

void kbackend_submit_oneshot(kbackend *b, kreq *r)
{
    kcore *core = b->set->core;
    koneshot_spec spec = { b->cli, b->oneshot_argv, b->env };
    core->stats.oneshot_requests++;
    koneshot_start(core, &spec, r);
}

/* ---- the set -------------------------------------------------------------- */

void kbackends_init(kbackends *set, kcore *core)
{
    set->core = core;
    set->count = set->peak = 0;
    klist_init(&set->all);
}

void kbackends_close_pools(kbackends *set, const char *msg)
{
    klist_foreach (n, &set->all) {
        kbackend *b = klist_entry(n, kbackend, link);
        if (b->pool)
            kpool_close(b->pool, msg);
        b->pool = NULL;
    }
}

void kbackends_free(kbackends *set)
{
    klist_foreach (n, &set->all)
        destroy(klist_entry(n, kbackend, link), "runtime shutting down");
}

void kbackends_health_check(kbackends *set)
{
    klist_foreach (n, &set->all) {
        kbackend *b = klist_entry(n, kbackend, link);
        if (b->pool)
            kpool_health_check(b->pool);
    }
}

void kbackends_each_pool(kbackends *set, void (*fn)(void *ud, const kpool *p), void *ud)
{
    klist_foreach (n, &set->all) {
        kbackend *b = klist_entry(n, kbackend, link);
        if (b->pool)
            fn(ud, b->pool);
    }
}
