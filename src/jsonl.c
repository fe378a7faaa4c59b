#include "jsonl.h"

#include <string.h>

void jsonl_init(jsonl_framer *f, size_t max_line)
{
    memset(f, 0, sizeof *f);
    f->max_line = max_line;
}

static int emit(jsonl_framer *f, const char *line, size_t len, jsonl_line_cb cb, void *ud)
{
    if (len > f->max_line)
        return JSONL_OVERFLOW;
    if (len && line[len - 1] == '\r')
        len--;
    return cb(ud, line, len) ? JSONL_STOPPED : JSONL_OK;
}

int jsonl_feed(jsonl_framer *f, const char *data, size_t n, jsonl_line_cb cb, void *ud)
{
    const char *p = data, *end = data + n;
    int rc;

    if (f->partial.len) {
        const char *nl = memchr(p, '\n', n);
        if (!nl) {
            if (f->partial.len + n > f->max_line)
                return JSONL_OVERFLOW;
            kbuf_append(&f->partial, p, n);
            return JSONL_OK;
        }
        if (f->partial.len + (size_t)(nl - p) > f->max_line)
            return JSONL_OVERFLOW;
        kbuf_append(&f->partial, p, (size_t)(nl - p));
        size_t len = f->partial.len;
        f->partial.len = 0; /* the bytes stay valid until the next append */
        if ((rc = emit(f, f->partial.data, len, cb, ud)))
            return rc;
        p = nl + 1;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        if ((rc = emit(f, p, (size_t)(nl - p), cb, ud)))
            return rc;
        p = nl + 1;
    }
    if (p < end) {
        if ((size_t)(end - p) > f->max_line)
            return JSONL_OVERFLOW;
        kbuf_append(&f->partial, p, (size_t)(end - p));
    }
    return JSONL_OK;
}

size_t jsonl_pending(const jsonl_framer *f)
{
    return f->partial.len;
}

void jsonl_reset(jsonl_framer *f)
{
    f->partial.len = 0;
}

void jsonl_free(jsonl_framer *f)
{
    kbuf_free(&f->partial);
}
