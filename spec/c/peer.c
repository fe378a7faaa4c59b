/* kiro-test-peer: hostile peers for the server's specs, one per mode. Each
 * prints "ready" (flushed) once it has done its harm, then holds everything
 * open until its stdin reaches EOF or it is killed.
 *
 *   kiro-test-peer hold-tcp HOST PORT N     N TCP connections that send nothing
 *   kiro-test-peer flood PATH BYTES         one request line of BYTES, sent
 *                                           without its newline, as fast as
 *                                           the server takes it
 *   kiro-test-peer noread PATH FILE         sends FILE's lines, never reads
 *   kiro-test-peer maxrss CMD [ARG...]      runs CMD (stdio inherited) and
 *                                           prints its peak resident kB on stderr
 *   kiro-test-peer trace PID MS             holds PID in a tracer's stop ('t',
 *                                           as strace or gdb would) for MS ms,
 *                                           then lets it go; exits 3 when the
 *                                           system allows no ptrace
 *
 * It raises its own descriptor limit, so N may exceed the usual 1024. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "kiro-test-peer: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int unix_connect(const char *path)
{
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die(path);
    return fd;
}

/* Writes all of p; 0, or -1 once the peer has closed. */
static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void ready_then_hold(void)
{
    puts("ready");
    fflush(stdout);
    for (;;)
        pause();
}

static int hold_tcp(const char *host, int port, int n)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "kiro-test-peer: %s: not an IPv4 address\n", host);
        return 2;
    }
    int held = 0;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket");
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            held++;
    }
    printf("connected %d\n", held);
    ready_then_hold();
    return 0;
}

static int flood(const char *path, long long bytes)
{
    int fd = unix_connect(path);
    static char chunk[1 << 16];
    static const char head[] = "{\"op\":\"request\",\"id\":1,\"prompt\":\"";
    memset(chunk, 'x', sizeof chunk);
    long long sent = 0;
    if (send_all(fd, head, sizeof head - 1) == 0) {
        while (sent < bytes) {
            size_t n = bytes - sent < (long long)sizeof chunk ? (size_t)(bytes - sent) : sizeof chunk;
            if (send_all(fd, chunk, n) != 0)
                break; /* the server closed it: what the spec wants to see */
            sent += (long long)n;
        }
    }
    printf("sent %lld\n", sent);
    ready_then_hold();
    return 0;
}

static int noread(const char *path, const char *file)
{
    FILE *f = fopen(file, "rb");
    if (!f)
        die(file);
    int fd = unix_connect(path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lines = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (send_all(fd, line, (size_t)n) != 0)
            break;
        lines++;
    }
    free(line);
    fclose(f);
    printf("sent %d\n", lines);
    ready_then_hold();
    return 0;
}

static int maxrss(char **argv)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        execvp(argv[0], argv);
        die(argv[0]);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR)
            die("wait4");
    fprintf(stderr, "maxrss %ld\n", ru.ru_maxrss);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int trace(pid_t pid, int ms)
{
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) {
        fprintf(stderr, "kiro-test-peer: cannot trace %d: %s\n", (int)pid, strerror(errno));
        return 3;
    }
    int status;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0 || waitpid(pid, &status, __WALL) != pid)
        die("interrupt");
    printf("ready\n");
    fflush(stdout);
    usleep((useconds_t)ms * 1000);
    if (ptrace(PTRACE_DETACH, pid, 0, 0) != 0)
        die("detach");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "maxrss") == 0)
        return maxrss(argv + 2);
    if (argc == 5 && strcmp(argv[1], "hold-tcp") == 0)
        return hold_tcp(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "flood") == 0)
        return flood(argv[2], atoll(argv[3]));
    if (argc == 4 && strcmp(argv[1], "noread") == 0)
        return noread(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "trace") == 0)
        return trace((pid_t)atoi(argv[2]), atoi(argv[3]));
    fputs("usage: kiro-test-peer hold-tcp HOST PORT N | flood PATH BYTES | noread PATH FILE"
          " | maxrss CMD [ARG...] | trace PID MS\n",
          stderr);
    return 2;
}
