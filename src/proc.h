/* Process supervisor: a child spawned by argv (never a shell) with its stdin,
 * stdout and stderr on pipes, all three serviced concurrently. The owner hears
 * of output as it arrives and of the end once the child has exited AND both
 * output pipes reached EOF, so no output is lost to the exit racing the reads. */
#ifndef KIRO_PROC_H
#define KIRO_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct proc proc;

typedef struct proc_cbs {
    void (*on_stdout)(void *ud, const char *data, size_t n);
    void (*on_stderr)(void *ud, const char *data, size_t n);
    /* The last callback; `p` is gone once it returns. */
    void (*on_end)(void *ud, int64_t exit_status, int term_signal);
} proc_cbs;

typedef struct proc_opts {
    char *const *argv;
    char *const *env;   /* NULL: inherit */
    const char *log_target;
    size_t stderr_tail; /* bytes of stderr kept for error messages */
    int close_fds;      /* mark every descriptor close-on-exec first, so the child
                           gets its three pipes and nothing else of this process */
} proc_opts;

/* Returns 0 or a negative libuv error code (the child was not started). */
int proc_spawn(uv_loop_t *loop, const proc_opts *o, const proc_cbs *cbs, void *ud, proc **out);
/* Queues `data` (malloc'd; ownership passes to the supervisor). */
void proc_write_owned(proc *p, char *data, size_t n);
/* Stops reading stdout (the child blocks once the pipe is full), or starts
 * again. stderr is always drained. */
void proc_pause_output(proc *p, int pause);
/* Closes stdin once queued writes are done. */
void proc_close_stdin(proc *p);
/* Orderly stop: stdin closed now, SIGTERM after grace_ms, SIGKILL after another grace_ms.
 * Signals go to the child's process group, so its own children go too. */
void proc_stop(proc *p, uint64_t grace_ms);
/* For a child that misbehaved: stdin closed and SIGTERM now, SIGKILL after grace_ms. */
void proc_terminate(proc *p, uint64_t grace_ms);
/* The owner is gone: no more callbacks; the child is terminated and reaped. */
void proc_detach(proc *p, uint64_t grace_ms);
int proc_pid(const proc *p);
/* The process state letter from /proc (R, S, T, Z, ...), or 0 if unknown. */
char proc_state(const proc *p);
/* The same for any pid (0 when it is gone), and its resident memory in
 * bytes (-1 when unknown). */
char proc_state_of(int pid);
long long proc_rss_of(int pid);
/* Stop a process that may be stopped itself: SIGKILL now. */
void proc_kill_now(proc *p);
/* The last bytes of stderr, as a printable one-line string (static buffer). */
const char *proc_stderr_tail(const proc *p);
/* Live supervised processes (for leak checks and shutdown). */
int proc_live_count(void);
/* Marks every descriptor above 2 close-on-exec (the whole process's). */
void proc_cloexec_all(void);

#endif
