/* Chores of a process that owns itself: its descriptors, a lock file, a
 * start in the background, its limits and memory, facts about processes.
 * Functions return 0 (or a value) on success and -1 with a message in err. */
#ifndef KIRO_OS_H
#define KIRO_OS_H

#include <stddef.h>
#include <signal.h>
#include <sys/types.h>

/* Marks every descriptor above 2 close-on-exec: one syscall where the kernel
 * has close_range(CLOSE_RANGE_CLOEXEC), else a walk of /proc/self/fd. */
void kos_cloexec_all(void);
/* An exclusive lock on path (created 0600), held by *fd until it is closed
 * or the process ends: it never goes stale. Returns 0, -1 with a message,
 * or 1 when another process holds it. */
int kos_lock(const char *path, int *fd, char *err, size_t errlen);
/* Starts argv[0] (no shell) detached: a double fork, a session of its own,
 * /dev/null for stdin, stdout and stderr, no other descriptor of ours.
 * Returns its pid, or -1 with a message (exec failures included). */
pid_t kos_start_detached(char *const argv[], char *err, size_t errlen);
/* Can this process append to path (creating it 0600)? */
int kos_check_writable(const char *path, char *err, size_t errlen);
/* The soft descriptor limit raised to the hard one; returns the limit. */
long kos_raise_nofile(void);
/* Freed heap memory handed back to the system (glibc), where possible. */
void kos_trim_memory(void);
/* The state letter of a process from /proc (R, S, T, Z, ...), 0 if gone. */
char kos_process_state(int pid);
/* Its resident memory in bytes, -1 when unknown. */
long long kos_process_rss(int pid);
/* The first executable `name` on PATH (or `name` itself when it has a
 * slash), written to buf. Returns 0, or -1 when there is none. */
int kos_which(const char *name, char *buf, size_t n);

/* SIGPIPE kept away from a host without touching its disposition: a write
 * to a reader that went away must be an EPIPE return, not the host's death.
 * Code that writes (a write call, a loop run that flushes queued writes)
 * runs between kos_sigpipe_hold and kos_sigpipe_release: SIGPIPE blocked,
 * and one it raised taken back before the mask is restored. Nothing is
 * done when SIGPIPE was ignored at kos_sigpipe_init (kiro-rt's own process
 * ignores it: it owns it). */
typedef struct kos_sigpipe {
    int active, pending; /* pending: the host blocks SIGPIPE itself */
    sigset_t old;
} kos_sigpipe;
void kos_sigpipe_init(void);
void kos_sigpipe_hold(kos_sigpipe *g);
void kos_sigpipe_release(kos_sigpipe *g);

/* A library loaded when first needed (dlopen), not when kiro loads: its
 * functions reached through slots. kos_lib_load tries once: 0, or -1 with
 * why in err (then and at every later call). `what` names what needs it
 * ("HTTP needs libcurl ..."); a slot's name is the function's own. */
typedef struct kos_sym {
    void **slot;
    const char *name;
} kos_sym;
typedef struct kos_lib {
    const char *soname, *what;
    int state; /* 0: not tried, 1: loaded, -1: failed */
    char why[256];
} kos_lib;
int kos_lib_load(kos_lib *lib, const kos_sym *syms, size_t n, char *err, size_t errlen);

#endif
