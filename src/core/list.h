/* One intrusive doubly linked list for the whole core, in the manner of
 * libuv's queue.h and the Linux kernel's list.h: a circular list with a head
 * node, its links inside the objects, so adding and removing never
 * allocate and an object knows whether it is linked. */
#ifndef KIRO_LIST_H
#define KIRO_LIST_H

#include <stddef.h>

typedef struct klist {
    struct klist *next, *prev;
} klist;

/* A head, or a node that is in no list (klist_linked is then false). */
static inline void klist_init(klist *h)
{
    h->next = h->prev = h;
}

static inline int klist_empty(const klist *h)
{
    return h->next == h;
}

static inline int klist_linked(const klist *n)
{
    return n->next != n;
}

static inline void klist_insert_tail(klist *h, klist *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static inline void klist_insert_head(klist *h, klist *n)
{
    klist_insert_tail(h->next, n);
}

/* Unlinks n (a no-op for an unlinked node); n is left unlinked. */
static inline void klist_remove(klist *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    klist_init(n);
}

#define klist_entry(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))
#define klist_first(h, type, member) (klist_empty(h) ? NULL : klist_entry((h)->next, type, member))

/* Walks h; the body may unlink (and free) the current node. */
#define klist_foreach(node, h)                                            \
    for (klist *node = (h)->next, *node##_next = node->next; node != (h); \
         node = node##_next, node##_next = node->next)

#endif
