/* The Lua face compiled into kiro-rt (scripts/embed_lua.lua writes the
 * table at build time): module name, bytecode. */
#ifndef KIRO_EMBEDDED_H
#define KIRO_EMBEDDED_H

#include <stddef.h>

struct kembedded {
    const char *name; /* "kiro", "kiro.cli", ... */
    const unsigned char *code;
    size_t len;
};

/* Ends with an entry whose name is NULL. */
extern const struct kembedded kiro_embedded[];

#endif
