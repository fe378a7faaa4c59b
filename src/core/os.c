#define _GNU_SOURCE /* pipe2, syscall */
#include "os.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define CLOSE_RANGE_CLOEXEC_FLAG 4U /* <linux/close_range.h>, not always installed */

/* close_range(3, ~0, CLOSE_RANGE_CLOEXEC): returns 1 if the kernel marked
 * every descriptor above 2, 0 if the caller must walk them. A bare syscall,
 * so a child may call it between fork and exec. */
static int cloexec_range(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC_FLAG) == 0)
        return 1;
#endif
    return 0;
}

void kos_cloexec_all(void)
{
    if (cloexec_range())
        return;
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return;
    int self = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != self) {
            int fl = fcntl(fd, F_GETFD);
            if (fl >= 0 && !(fl & FD_CLOEXEC))
                fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
        }
    }
    closedir(dir);
}

/* The same in a child between fork and exec: syscalls only. */
static void cloexec_all_in_child(void)
{
    if (cloexec_range())
        return;
    struct rlimit rl;
    int max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
    for (int fd = 3; fd < max; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
}

int kos_lock(const char *path, int *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        snprintf(err, errlen, "%s is locked: %s", path, strerror(e));
        return e == EWOULDBLOCK ? 1 : -1;
    }
    *out = fd;
    return 0;
}

static ssize_t read_full(int fd, void *buf, size_t n)
{
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

pid_t kos_start_detached(char *const argv[], char *err, size_t errlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t child = fork();
    if (child < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (child == 0) {
        /* Only async-signal-safe calls from here to exec. The pipe tells the
         * parent the grandchild's pid, then (if exec fails) its errno; a
         * successful exec closes it. */
        close(pfd[0]);
        setsid();
        pid_t gc = fork();
        if (gc != 0) {
            if (gc > 0)
                (void)!write(pfd[1], &gc, sizeof gc);
            _exit(gc > 0 ? 0 : 1);
        }
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0) {
            int e = errno;
            (void)!write(pfd[1], &e, sizeof e);
            _exit(127);
        }
        if (null > 2)
            close(null);
        cloexec_all_in_child();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        int e = errno;
        (void)!write(pfd[1], &e, sizeof e);
        _exit(127);
    }
    close(pfd[1]);
    pid_t gc = 0;
    int exec_errno = 0;
    ssize_t r = read_full(pfd[0], &gc, sizeof gc);
    ssize_t r2 = read_full(pfd[0], &exec_errno, sizeof exec_errno); /* EOF once exec'd */
    close(pfd[0]);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    if (r != sizeof gc) {
        snprintf(err, errlen, "could not start the background process");
        return -1;
    }
    if (r2 == sizeof exec_errno) {
        snprintf(err, errlen, "cannot run %s: %s", argv[0], strerror(exec_errno));
        return -1;
    }
    return gc;
}

int kos_check_writable(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

long kos_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

void kos_trim_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

char kos_process_state(int pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')'); /* the name may hold anything */
    return close_paren && close_paren[1] == ' ' ? close_paren[2] : 0;
}

long long kos_process_rss(int pid)
{
    char path[64];
    long long size, resident;
    snprintf(path, sizeof path, "/proc/%d/statm", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int n = fscanf(f, "%lld %lld", &size, &resident);
    fclose(f);
    return n == 2 ? resident * sysconf(_SC_PAGESIZE) : -1;
}

int kos_which(const char *name, char *buf, size_t n)
{
    if (strchr(name, '/')) {
        size_t len = strlen(name);
        if (len >= n || access(name, X_OK) != 0)
            return -1;
        memcpy(buf, name, len + 1);
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t dl = strcspn(path, ":");
        /* An empty entry is the current directory. */
        int w = dl ? snprintf(buf, n, "%.*s/%s", (int)dl, path, name) : snprintf(buf, n, "./%s", name);
        if (w > 0 && (size_t)w < n && access(buf, X_OK) == 0)
            return 0;
        path += dl + (path[dl] == ':');
    }
    return -1;
}

static int sigpipe_guarded; /* SIGPIPE was not ignored at kos_sigpipe_init */

void kos_sigpipe_init(void)
{
    struct sigaction sa;
    sigpipe_guarded = sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_IGN;
}

static void sigpipe_set(sigset_t *s)
{
    sigemptyset(s);
    sigaddset(s, SIGPIPE);
}

void kos_sigpipe_hold(kos_sigpipe *g)
{
    g->active = sigpipe_guarded;
    if (!g->active)
        return;
    sigset_t s;
    sigpipe_set(&s);
    pthread_sigmask(SIG_BLOCK, &s, &g->old);
    /* Blocked by the host already: a SIGPIPE pending then is the host's
     * business (as one of ours would be without us). Else none can be
     * pending now: it would have been delivered. */
    g->pending = sigismember(&g->old, SIGPIPE) == 1;
}

void kos_sigpipe_release(kos_sigpipe *g)
{
    if (!g->active)
        return;
    sigset_t s, pending;
    sigpipe_set(&s);
    if (!g->pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        const struct timespec now = { 0, 0 };
        while (sigtimedwait(&s, NULL, &now) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

int kos_lib_load(kos_lib *lib, const kos_sym *syms, size_t n, char *err, size_t errlen)
{
    if (lib->state == 0) {
        lib->state = -1;
        void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(lib->why, sizeof lib->why, "%s needs %s: %s", lib->what, lib->soname, dlerror());
        } else {
            lib->state = 1;
            for (size_t i = 0; i < n && lib->state == 1; i++)
                if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
                    snprintf(lib->why, sizeof lib->why, "%s has no %s", lib->soname, syms[i].name);
                    lib->state = -1;
                }
            /* (a library that failed stays loaded: dlclose is not worth its risks) */
        }
    }
    if (lib->state < 0)
        snprintf(err, errlen, "%s", lib->why);
    return lib->state > 0 ? 0 : -1;
}
