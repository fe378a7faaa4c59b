/* A C host that embeds kiro's core, built against an installed kiro-rt
 * (cc embed.c $(pkg-config --cflags --libs kiro-core)): one request to a
 * warm daemon of CLI, the reply streamed to stdout as it comes, then the
 * runtime stopped (its daemon too). The install spec builds and runs it.
 * Usage: embed CLI PROMPT; exit status 0, or 1 with "code: message". */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "rt.h"

static int done, failed;

static void on_chunk(void *ud, const char *data, size_t n)
{
    (void)ud;
    fwrite(data, 1, n, stdout);
    fflush(stdout);
}

static void on_end(void *ud, const char *code, const char *msg)
{
    (void)ud;
    done = 1;
    if (code) {
        fprintf(stderr, "%s: %s\n", code, msg);
        failed = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: embed CLI PROMPT\n");
        return 2;
    }
    static const char *const daemon_args[] = { "daemon", NULL }, *const acp_args[] = { "acp", NULL },
                             *const oneshot_args[] = { "chat", "--no-interactive", NULL };
    kbackend_spec spec = { .cli = argv[1],
                           .protocol = "auto",
                           .daemon_args = daemon_args,
                           .acp_args = acp_args,
                           .oneshot_args = oneshot_args };
    krt *rt = krt_new();
    char err[256];
    kbackend *b = kbackend_get(&rt->backends, &spec, err, sizeof err);
    if (!b) {
        fprintf(stderr, "backend: %s\n", err);
        krt_free(rt);
        return 1;
    }
    kreq_sink sink = { .chunk = on_chunk, .end = on_end };
    kreq *r = kreq_new(&rt->core, argv[2], strlen(argv[2]), 1, &sink);
    kreq_start(r);
    krt_submit(rt, b, 0, r);
    while (!done)
        uv_run(rt->core.loop, UV_RUN_ONCE);
    putchar('\n');
    kreq_unref(r);
    kbackend_unref(b);
    krt_free(rt);
    return failed;
}
