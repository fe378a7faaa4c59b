/* A growable byte buffer. Allocation failure aborts: a runtime that cannot
 * allocate a few kilobytes has no useful way to go on. */
#ifndef KIRO_BUF_H
#define KIRO_BUF_H

#include <stddef.h>

typedef struct kbuf {
    char *data;
    size_t len, cap;
} kbuf;

void kbuf_reserve(kbuf *b, size_t extra);
void kbuf_append(kbuf *b, const void *p, size_t n);
void kbuf_free(kbuf *b);
void *kmalloc(size_t n);
void *kcalloc(size_t n, size_t sz);
void *krealloc(void *p, size_t n);
char *kstrdup(const char *s);
char *kstrndup(const char *s, size_t n); /* n bytes, then a NUL */

#endif
