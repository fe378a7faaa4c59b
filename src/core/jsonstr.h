/* JSON string bodies, written straight into a caller's buffer. Parsing stays
 * with jansson; this is only the encoder's inner loop, for prompts of any
 * size: jansson would copy a prompt into a json_t and dump it into a growing
 * buffer (three copies of a 10 MB prompt at once), where this writes one. */
#ifndef KIRO_JSONSTR_H
#define KIRO_JSONSTR_H

#include <stddef.h>

/* Checks that s is valid UTF-8 (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF; NUL is fine) and sets *len to the size of its JSON
 * escaping, without quotes. Returns 0, or -1 with *bad at the offending byte. */
int kjstr_measure(const char *s, size_t n, size_t *len, size_t *bad);

/* Writes the escaping of s (kjstr_measure'd) at dst; returns the end. */
char *kjstr_write(char *dst, const char *s, size_t n);

/* The same, in place: s occupies buf[0..n), and its escaping (esc bytes, as
 * measured) is written to buf[at..at+esc), where at >= 0 and the buffer holds
 * at + esc bytes. Works backwards, so no second buffer is needed. */
void kjstr_write_in_place(char *buf, size_t n, size_t at, size_t esc);

/* Seeds jansson's hash function from one getrandom() call (jansson would
 * read /dev/urandom on first use: an open, a read and a close). A no-op
 * when it was seeded already, or made JSON values before. */
void kjson_seed(void);

#endif
