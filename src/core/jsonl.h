/* Incremental JSON Lines framer: bytes in, complete lines out.
 * Lines end in "\n"; a trailing "\r" is dropped. Complete lines in the input
 * are handed out without copying; only a partial tail is buffered. */
#ifndef KIRO_JSONL_H
#define KIRO_JSONL_H

#include <stddef.h>
#include "buf.h"

typedef struct kjsonl {
    kbuf partial;
    size_t max_line;
} kjsonl;

/* Return non-zero from the callback to stop framing (the rest is dropped). */
typedef int (*kjsonl_line_cb)(void *ud, const char *line, size_t len);

enum { KJSONL_OK = 0, KJSONL_STOPPED = 1, KJSONL_OVERFLOW = -1 };

void kjsonl_init(kjsonl *f, size_t max_line);
int kjsonl_feed(kjsonl *f, const char *data, size_t n, kjsonl_line_cb cb, void *ud);
/* Bytes of an unterminated line still held. */
size_t kjsonl_pending(const kjsonl *f);
/* With no line pending, a buffer grown past `keep` bytes (a long line went
 * through) goes back to the system; the framer stays usable. */
void kjsonl_trim(kjsonl *f, size_t keep);
void kjsonl_reset(kjsonl *f);
void kjsonl_free(kjsonl *f);

#endif
