/* The floor for a daemon round trip: a parent and a child exchanging one
 * short line over a pair of pipes, N times. Prints the mean round trip in
 * microseconds. Usage: pipe-pingpong [N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    int down[2], up[2];
    char buf[256];
    static const char ping[] = "{\"prompt\":\"ping\",\"stream\":false}\n";
    static const char pong[] = "{\"content\":\"You said: ping\"}\n";
    if (pipe(down) || pipe(up))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        for (;;) {
            ssize_t r = read(down[0], buf, sizeof buf);
            if (r <= 0)
                _exit(0);
            if (write(up[1], pong, sizeof pong - 1) < 0)
                _exit(1);
        }
    }
    close(down[0]);
    close(up[1]);
    double t0 = 0;
    for (long i = -1000; i < n; i++) { /* 1000 warm-up rounds */
        if (i == 0)
            t0 = now_us();
        if (write(down[1], ping, sizeof ping - 1) < 0 || read(up[0], buf, sizeof buf) <= 0)
            return 1;
    }
    double us = (now_us() - t0) / (double)n;
    close(down[1]);
    waitpid(pid, NULL, 0);
    printf("%.2f\n", us);
    return 0;
}
