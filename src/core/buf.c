#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(void)
{
    fputs("kiro-rt: out of memory\n", stderr);
    abort();
}

void *kmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *kcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        oom();
    return p;
}

void *krealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

char *kstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(kmalloc(n), s, n);
}

char *kstrndup(const char *s, size_t n)
{
    char *d = kmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void kbuf_reserve(kbuf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    /* Doubling keeps appends amortised; one large reservation is taken as
     * asked (a 10 MB prompt gets 10 MB, not the next power of two). */
    size_t cap = b->cap ? b->cap * 2 : 256;
    if (cap - b->len < extra)
        cap = b->len + extra;
    b->data = krealloc(b->data, cap);
    b->cap = cap;
}

void kbuf_append(kbuf *b, const void *p, size_t n)
{
    kbuf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void kbuf_free(kbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
