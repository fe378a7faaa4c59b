#include "jsonl.h"

#include <string.h>

void kjsonl_init(kjsonl *f, size_t max_line)
{
    memset(f, 0, sizeof *f);
    f->max_line = max_line;
}

static int emit(kjsonl *f, const char *line, size_t len, kjsonl_line_cb cb, void *ud)
{
    if (len > f->max_line)
        return KJSONL_OVERFLOW;
    if (len && line[len - 1] == '\r')
        len--;
    return cb(ud, line, len) ? KJSONL_STOPPED : KJSONL_OK;
}

int kjsonl_feed(kjsonl *f, const char *data, size_t n, kjsonl_line_cb cb, void *ud)
{
    const char *p = data, *end = data + n;
    int rc;

    if (f->partial.len) {
        const char *nl = memchr(p, '\n', n);
        if (!nl) {
            if (f->partial.len + n > f->max_line)
                return KJSONL_OVERFLOW;
            kbuf_append(&f->partial, p, n);
            return KJSONL_OK;
        }
        if (f->partial.len + (size_t)(nl - p) > f->max_line)
            return KJSONL_OVERFLOW;
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
            return KJSONL_OVERFLOW;
        kbuf_append(&f->partial, p, (size_t)(end - p));
    }
    return KJSONL_OK;
}

size_t kjsonl_pending(const kjsonl *f)
{
    return f->partial.len;
}

void kjsonl_trim(kjsonl *f, size_t keep)
{
    if (f->partial.len == 0 && f->partial.cap > keep)
        kbuf_free(&f->partial);
}

void kjsonl_reset(kjsonl *f)
{
    f->partial.len = 0;
}

void kjsonl_free(kjsonl *f)
{
    kbuf_free(&f->partial);
}
