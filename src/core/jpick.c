/* Picking fields with yajl's event parser (jpick.h).
 *
 * The parse keeps, for each open container, the set of paths (a bit mask)
 * whose keys so far lead to it; a key narrows its container's set to the
 * paths that go on with that key, and a value whose set holds a path that
 * ends there is recorded. A value's raw text runs from its first byte to
 * where yajl stands after its last token (yajl_get_bytes_consumed in a
 * callback: the tokens without callbacks are only ':', ',' and blanks, so
 * a value starts at the first other byte after the previous event). */
#include "jpick.h"

#include <stdint.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "jsonstr.h"

typedef unsigned mask_t; /* a bit per path: KJPICK_MAX <= 16 */

typedef struct level {
    mask_t paths;   /* paths leading to this container */
    mask_t key;     /* ...and on through its current key (maps) */
    mask_t closing; /* paths that end at this container: raw end to set */
    size_t start;   /* where this container's text begins */
    int array;
    long index; /* an array's next element */
} level;

typedef struct pick {
    yajl_handle h;
    const char *json;
    size_t len, prev; /* where the previous event ended */
    const kjpick_paths *p;
    kjp_field *out;
    kbuf *scratch;
    int depth, not_object;
    size_t end;                    /* where the top object ended; 0 until it has */
    mask_t in_scratch;             /* strings decoded into scratch... */
    size_t offset[KJPICK_MAX];     /* ...at these offsets */
    level stack[KJPICK_DEPTH + 2]; /* [d]: the open container at depth d
                                    * (1: the top object), as deep as the
                                    * value of the longest path */
} pick;

/* A key that is a decimal number also names an array's element. */
static long index_of(const char *s, size_t n)
{
    long v = 0;
    if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int kjpick_compile(kjpick_paths *p, const char *const *paths)
{
    struct {
        const char *key;
        size_t len;
    } keys[KJPICK_MAX][KJPICK_DEPTH];
    memset(p, 0, sizeof *p);
    for (; paths[p->n]; p->n++) {
        if (p->n == KJPICK_MAX)
            return -1;
        const char *s = paths[p->n];
        int d = 0;
        for (;;) {
            const char *dot = strchr(s, '.');
            size_t n = dot ? (size_t)(dot - s) : strlen(s);
            if (d == KJPICK_DEPTH)
                return -1;
            keys[p->n][d].key = s;
            keys[p->n][d].len = n;
            d++;
            if (!dot)
                break;
            s = dot + 1;
        }
        p->depth[p->n] = d;
    }
    /* Path i's step at depth d is that of the first path j with the same
     * first d + 1 keys. */
    for (int i = 0; i < p->n; i++)
        for (int d = 0; d < p->depth[i]; d++) {
            int s = 0;
            for (; s < p->nsteps[d]; s++) {
                int j = __builtin_ctz(p->steps[d][s].paths), same = 1;
                for (int e = 0; same && e <= d; e++)
                    same = keys[i][e].len == keys[j][e].len &&
                           memcmp(keys[i][e].key, keys[j][e].key, keys[i][e].len) == 0;
                if (same)
                    break;
            }
            if (s == p->nsteps[d])
                p->steps[d][p->nsteps[d]++] =
                    (struct kjpick_step){ keys[i][d].key, (unsigned)keys[i][d].len, 0,
                                          index_of(keys[i][d].key, keys[i][d].len) };
            p->steps[d][s].paths |= 1u << i;
        }
    return 0;
}

/* The lowest path in a set, taken out of it. */
static int next_path(mask_t *m)
{
    int i = __builtin_ctz(*m);
    *m &= *m - 1;
    return i;
}

/* Where the value whose tokens end here began. */
static size_t value_start(const pick *k)
{
    size_t i = k->prev;
    for (; i < k->len; i++) {
        char c = k->json[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != ':' && c != ',')
            break;
    }
    return i;
}

/* The paths a value at the current place ends: recorded, raw text and all
 * but its end (set by the caller or at the container's end). Returns the
 * paths that go on inside it (for a map). */
static mask_t value(pick *k, kjp_type type, mask_t *ending)
{
    size_t end = yajl_get_bytes_consumed(k->h), start = 0;
    *ending = 0;
    if (k->depth == 0 || k->depth > KJPICK_DEPTH) {
        k->prev = end;
        return 0;
    }
    level *l = &k->stack[k->depth];
    mask_t here = l->key, deeper = 0;
    l->key = 0;     /* a map's next value needs its key */
    if (l->array) { /* an element: paths that go on with its index */
        here = 0;
        const kjpick_paths *p = k->p;
        for (int i = 0; i < p->nsteps[k->depth - 1]; i++) {
            const struct kjpick_step *step = &p->steps[k->depth - 1][i];
            if ((step->paths & l->paths) && step->index == l->index)
                here = step->paths & l->paths;
        }
        l->index++;
    }
    if (here)
        start = value_start(k);
    k->prev = end;
    while (here) {
        int i = next_path(&here);
        if (k->p->depth[i] == k->depth) {
            *ending |= 1u << i;
            k->out[i] = (kjp_field){ .type = type, .raw = k->json + start, .raw_len = end - start };
        } else { /* found afresh inside this value: a key given twice, the last counts */
            deeper |= 1u << i;
            k->out[i] = (kjp_field){ .type = KJP_ABSENT };
            k->in_scratch &= ~(1u << i);
        }
    }
    return deeper;
}

static int scalar(pick *k, kjp_type type, long long integer)
{
    if (k->depth == 0) {
        k->not_object = 1;
        return 0;
    }
    mask_t ending;
    value(k, type, &ending);
    while (ending)
        k->out[next_path(&ending)].integer = integer;
    return 1;
}

static int on_null(void *ud)
{
    return scalar(ud, KJP_NULL, 0);
}

static int on_boolean(void *ud, int b)
{
    return scalar(ud, KJP_BOOLEAN, b != 0);
}

static int on_integer(void *ud, long long i)
{
    return scalar(ud, KJP_INTEGER, i);
}

static int on_double(void *ud, double d)
{
    (void)d;
    return scalar(ud, KJP_NUMBER, 0);
}

/* A decoded string's text: in the input when it had no escapes, else in
 * yajl's buffer, which the next token reuses: copied to scratch then, its
 * offset kept until the end (scratch may move as it grows). A value given
 * again (a key twice) leaves its first copy behind, unused. */
static int on_string(void *ud, const unsigned char *s, size_t n)
{
    pick *k = ud;
    if (k->depth == 0) {
        k->not_object = 1;
        return 0;
    }
    mask_t ending;
    value(k, KJP_STRING, &ending);
    if (!ending)
        return 1;
    uintptr_t at = (uintptr_t)s, lo = (uintptr_t)k->json;
    int copied = n && (at < lo || at + n > lo + k->len);
    size_t esc;
    /* Decoded from escapes: yajl lets a lone low surrogate through as bytes
     * that are not UTF-8, where jansson refuses the line: so do we. */
    if (copied && kjstr_measure((const char *)s, n, &esc, NULL) != 0) {
        k->not_object = 1;
        return 0;
    }
    size_t off = k->scratch->len;
    if (copied)
        kbuf_append(k->scratch, s, n);
    while (ending) {
        int i = next_path(&ending);
        {
            k->out[i].str = n ? (const char *)s : "";
            k->out[i].len = n;
            k->offset[i] = off;
            if (copied)
                k->in_scratch |= 1u << i;
            else
                k->in_scratch &= ~(1u << i);
        }
    }
    return 1;
}

static int open_container(pick *k, kjp_type type)
{
    mask_t ending = 0, deeper;
    if (k->depth == 0) {
        if (type != KJP_OBJECT) {
            k->not_object = 1;
            return 0;
        }
        k->prev = yajl_get_bytes_consumed(k->h);
        deeper = k->p->n ? (mask_t)((1u << k->p->n) - 1) : 0;
    } else {
        deeper = value(k, type, &ending);
    }
    k->depth++;
    if (k->depth <= KJPICK_DEPTH + 1)
        k->stack[k->depth] = (level){ .paths = deeper,
                                      .closing = ending,
                                      .array = type == KJP_ARRAY,
                                      .start = yajl_get_bytes_consumed(k->h) - 1 };
    return 1;
}

static int close_container(pick *k)
{
    size_t end = yajl_get_bytes_consumed(k->h);
    k->prev = end;
    if (k->depth <= KJPICK_DEPTH + 1) {
        level *l = &k->stack[k->depth];
        for (mask_t m = l->closing; m;)
            k->out[next_path(&m)].raw_len = end - l->start;
    }
    if (--k->depth == 0)
        k->end = end;
    return 1;
}

static int on_start_map(void *ud)
{
    return open_container(ud, KJP_OBJECT);
}

static int on_start_array(void *ud)
{
    return open_container(ud, KJP_ARRAY);
}

static int on_end(void *ud)
{
    return close_container(ud);
}

/* memcmp(a, b, n) == 0, for keys: a few bytes, not worth a call. */
static int same_bytes(const char *a, const char *b, size_t n)
{
    while (n && *a == *b)
        a++, b++, n--;
    return n == 0;
}

static int on_key(void *ud, const unsigned char *s, size_t n)
{
    pick *k = ud;
    size_t esc;
    if (memchr(s, '\0', n) || kjstr_measure((const char *)s, n, &esc, NULL) != 0) {
        k->not_object = 1; /* a key jansson refuses */
        return 0;
    }
    k->prev = yajl_get_bytes_consumed(k->h);
    if (k->depth > KJPICK_DEPTH)
        return 1;
    level *l = &k->stack[k->depth];
    l->key = 0;
    const kjpick_paths *p = k->p;
    for (int i = 0; l->paths && i < p->nsteps[k->depth - 1]; i++) {
        const struct kjpick_step *step = &p->steps[k->depth - 1][i];
        if ((step->paths & l->paths) && step->len == n && same_bytes(step->key, (const char *)s, n)) {
            l->key = step->paths & l->paths;
            break;
        }
    }
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_integer = on_integer,
    .yajl_double = on_double,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

int kjpick(const char *json, size_t len, const kjpick_paths *p, kjp_field *out, kbuf *scratch)
{
    pick k = { .json = json, .len = len, .p = p, .out = out, .scratch = scratch };
    memset(out, 0, (size_t)p->n * sizeof *out);
    scratch->len = 0;
    k.h = yajl_alloc(&callbacks, NULL, &k);
    if (!k.h)
        return -1;
    int ok = yajl_parse(k.h, (const unsigned char *)json, len) == yajl_status_ok &&
             yajl_complete_parse(k.h) == yajl_status_ok && !k.not_object && k.end;
    yajl_free(k.h);
    /* Only blanks after the object: yajl lets an unfinished token there go
     * (`{}"`), taking it for one that more input would end. */
    for (size_t i = k.end; ok && i < len; i++)
        ok = json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n';
    if (!ok)
        return -1;
    for (int i = 0; i < p->n; i++)
        if (out[i].type == KJP_STRING && (k.in_scratch & (1u << i)))
            out[i].str = scratch->data + k.offset[i];
    return 0;
}

int kjp_is(const kjp_field *f, const char *s)
{
    size_t n = strlen(s);
    return f->type == KJP_STRING && f->len == n && memcmp(f->str, s, n) == 0;
}
