/* Incremental JSON Lines framer: bytes in, complete lines out.
 * Lines end in "\n"; a trailing "\r" is dropped. Complete lines in the input
 * are handed out without copying; only a partial tail is buffered. */
#ifndef KIRO_JSONL_H
#define KIRO_JSONL_H

#include <stddef.h>
#include "buf.h"

typedef struct jsonl_framer {
    kbuf partial;
    size_t max_line;
} jsonl_framer;

/* Return non-zero from the callback to stop framing (the rest is dropped). */
typedef int (*jsonl_line_cb)(void *ud, const char *line, size_t len);

enum { JSONL_OK = 0, JSONL_STOPPED = 1, JSONL_OVERFLOW = -1 };

void jsonl_init(jsonl_framer *f, size_t max_line);
int jsonl_feed(jsonl_framer *f, const char *data, size_t n, jsonl_line_cb cb, void *ud);
/* Bytes of an unterminated line still held. */
size_t jsonl_pending(const jsonl_framer *f);
void jsonl_reset(jsonl_framer *f);
void jsonl_free(jsonl_framer *f);

#endif
