#include "jsonstr.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

/* Bytes each byte becomes inside a JSON string: 1 (itself), 2 (\n, \", ...)
 * or 6 (\u00XX for the other control characters). */
static unsigned char width(unsigned char c)
{
    if (c >= 0x20)
        return c == '"' || c == '\\' ? 2 : 1;
    switch (c) {
    case '\b':
    case '\f':
    case '\n':
    case '\r':
    case '\t':
        return 2;
    default:
        return 6;
    }
}

/* Length of the UTF-8 sequence at s (1 to 4), or 0 if it is not valid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

int kjstr_measure(const char *s, size_t n, size_t *len, size_t *bad)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) {
            out += width(p[i]);
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (!k) {
            if (bad)
                *bad = i;
            return -1;
        }
        out += k;
        i += k;
    }
    *len = out;
    return 0;
}

static const char hex[] = "0123456789abcdef";

/* The escape of c (width(c) > 1) into out; returns its length. */
static size_t escape(unsigned char c, char out[6])
{
    out[0] = '\\';
    switch (c) {
    case '"':
    case '\\':
        out[1] = (char)c;
        return 2;
    case '\b':
        out[1] = 'b';
        return 2;
    case '\f':
        out[1] = 'f';
        return 2;
    case '\n':
        out[1] = 'n';
        return 2;
    case '\r':
        out[1] = 'r';
        return 2;
    case '\t':
        out[1] = 't';
        return 2;
    default:
        memcpy(out + 1, "u00", 3);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        return 6;
    }
}

char *kjstr_write(char *dst, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        if (width(p[i]) == 1)
            continue;
        memcpy(dst, s + run, i - run);
        dst += i - run;
        dst += escape(p[i], dst);
        run = i + 1;
    }
    memcpy(dst, s + run, n - run);
    return dst + (n - run);
}

void kjstr_write_in_place(char *buf, size_t n, size_t at, size_t esc)
{
    /* Every byte moves to an offset at least its own (escapes only grow), so
     * filling from the end never overwrites a byte not yet read. */
    size_t w = at + esc, i = n;
    while (i > 0) {
        size_t end = i;
        while (i > 0 && width((unsigned char)buf[i - 1]) == 1)
            i--;
        size_t plain = end - i;
        w -= plain;
        memmove(buf + w, buf + i, plain);
        if (i == 0)
            break;
        char e[6];
        size_t k = escape((unsigned char)buf[--i], e);
        w -= k;
        memcpy(buf + w, e, k);
    }
}

void kjson_seed(void)
{
    uint32_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed && seed != 0)
        json_object_seed(seed);
}
