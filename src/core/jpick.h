/* Fields picked out of one JSON object by their paths, in one pass of
 * yajl's event parser: no tree is built and nothing is allocated for what
 * is not asked for. For a protocol's hot lines (an ACP chunk, the end of a
 * turn), where building a jansson tree costs five times the parse. The
 * parse is as strict as jansson's (UTF-8 checked, no trailing garbage);
 * anything rarer is handed to jansson as the raw text of the field that
 * holds it. */
#ifndef KIRO_JPICK_H
#define KIRO_JPICK_H

#include <stddef.h>

#include "buf.h"

#define KJPICK_MAX 16  /* paths in one pick */
#define KJPICK_DEPTH 6 /* keys in one path */

typedef enum {
    KJP_ABSENT = 0,
    KJP_STRING,
    KJP_INTEGER, /* one that fits a long long */
    KJP_NUMBER,  /* any other number */
    KJP_BOOLEAN,
    KJP_NULL,
    KJP_OBJECT,
    KJP_ARRAY,
} kjp_type;

typedef struct kjp_field {
    kjp_type type;
    const char *raw; /* the value's JSON text, inside the input */
    size_t raw_len;
    const char *str; /* KJP_STRING: the decoded text (not NUL-terminated:
                      * a string may hold a NUL), inside the input or
                      * the scratch buffer */
    size_t len;
    long long integer; /* KJP_INTEGER; KJP_BOOLEAN: 0 or 1 */
} kjp_field;

/* Paths are dotted keys from the top object ("params.update.content"),
 * compiled once. A key that is a decimal number names an array's element
 * as well ("params.prompt.0.text"). A key holding a dot cannot be named. */
typedef struct kjpick_paths {
    int n;
    int depth[KJPICK_MAX];
    /* The distinct steps at each depth: a key (or index) after the same
     * keys before it, and the paths that take it (so a key is compared once
     * for all of them). */
    struct kjpick_step {
        const char *key;
        unsigned len;
        unsigned paths;
        long index; /* the element it names in an array, or -1 */
    } steps[KJPICK_DEPTH][KJPICK_MAX];
    int nsteps[KJPICK_DEPTH];
} kjpick_paths;

/* Compiles a NULL-terminated list of paths (static strings: they are
 * pointed into, not copied). Returns 0, or -1 for too many paths or keys. */
int kjpick_compile(kjpick_paths *p, const char *const *paths);

/* Fills out[i] for path i (KJP_ABSENT for a path not in the object; with a
 * key given twice, the last one counts, as in jansson). Strings holding
 * escapes are decoded into `scratch` (reset first; out[] points into it
 * until its next use). Returns 0 for a JSON object; -1 for anything else
 * (not JSON, or JSON that is not an object), with out[] undefined. */
int kjpick(const char *json, size_t len, const kjpick_paths *p, kjp_field *out, kbuf *scratch);

/* Whether f is the string s (NUL-terminated). */
int kjp_is(const kjp_field *f, const char *s);

#endif
