/* Process supervisor: a child spawned by argv (never a shell) with its stdin,
 * stdout and stderr on pipes, all three serviced concurrently. The owner hears
 * of output as it arrives and of the end once the child has exited AND both
 * output pipes reached EOF, so no output is lost to the exit racing the reads. */
#ifndef KIRO_PROC_H
#define KIRO_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct kproc kproc;

typedef struct kproc_cbs {
    void (*on_stdout)(void *ud, const char *data, size_t n);
    void (*on_stderr)(void *ud, const char *data, size_t n);
    /* The last callback; `p` is gone once it returns. */
    void (*on_end)(void *ud, int64_t exit_status, int term_signal);
} kproc_cbs;

typedef struct kproc_opts {
    char *const *argv;
    char *const *env; /* NULL: inherit */
    const char *log_target;
    size_t stderr_tail; /* bytes of stderr kept for error messages */
    int close_fds;      /* mark every descriptor close-on-exec first, so the child
                           gets its three pipes and nothing else of this process */
} kproc_opts;

/* Returns 0 or a negative libuv error code (the child was not started). */
int kproc_spawn(uv_loop_t *loop, const kproc_opts *o, const kproc_cbs *cbs, void *ud, kproc **out);
/* Queues `data` (malloc'd; ownership passes to the supervisor). */
void kproc_write_owned(kproc *p, char *data, size_t n);
/* Stops reading stdout (the child blocks once the pipe is full), or starts
 * again. stderr is always drained. */
void kproc_pause_output(kproc *p, int pause);
/* Closes stdin once queued writes are done. */
void kproc_close_stdin(kproc *p);
/* Orderly stop: stdin closed now, SIGTERM after grace_ms, SIGKILL after another grace_ms.
 * Signals go to the child's process group, so its own children go too. */
void kproc_stop(kproc *p, uint64_t grace_ms);
/* For a child that misbehaved: stdin closed and SIGTERM now, SIGKILL after grace_ms. */
void kproc_terminate(kproc *p, uint64_t grace_ms);
/* The owner is gone: no more callbacks; the child is terminated and reaped. */
void kproc_detach(kproc *p, uint64_t grace_ms);
int kproc_pid(const kproc *p);
/* The process state letter from /proc (R, S, T, Z, ...), or 0 if unknown. */
char kproc_state(const kproc *p);
/* Stop a process that may be stopped itself: SIGKILL now. */
void kproc_kill_now(kproc *p);
/* The last bytes of stderr, as a printable one-line string (static buffer). */
const char *kproc_stderr_tail(const kproc *p);
/* Live supervised processes (for leak checks and shutdown). */
int kproc_live_count(void);

#endif
