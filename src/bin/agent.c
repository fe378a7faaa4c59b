/* `kiro-rt agent -m TEXT` for a server that runs: the call people make from
 * a shell or a script, once per message. It is served here, in C, before
 * any Lua state exists: one request line, one blocking exchange on the
 * server's socket, the chunks to stdout. A call then costs about what
 * starting kiro-rt costs, and the server (where the Lua face runs: policy,
 * templates, fallbacks) does the rest.
 *
 * This path only ever takes what is plainly well-formed. Anything else (a
 * flag it does not know, a bad value, stdin, --no-server, oneshot, no server
 * running, a server of another version) it declines before a byte is sent,
 * and lua/kiro/cli.lua serves the call: the CLI's rules, messages and
 * fallbacks are written once, there. */
#include "agent.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ipc.h"
#include "jsonstr.h"
#include "os.h"
#include "rt.h"
#include "version.h"

#define MAX_FAST_PROMPT 65536 /* longer prompts go through the handshake (cli.lua) */
#define MAX_MS 2147483647LL   /* the longest duration a flag takes, as cli.lua */
#define EXIT_FAIL 1
#define EXIT_USAGE 2 /* a configuration error too: a name the server has not */
#define EXIT_TIMEOUT 124

extern char **environ;

struct opts {
    const char *message, *model, *mode, *protocol, *session;
    int protocol_given;   /* by --protocol (not KIRO_PROTOCOL) */
    long long timeout_ms; /* 0: the runtime's default */
    int stream, raw;
};

static const char *nonempty_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int known_protocol(const char *p)
{
    return !strcmp(p, "auto") || !strcmp(p, "jsonl") || !strcmp(p, "acp");
}

/* A whole number in decimal, digits only, from 1 to MAX_MS; 0 otherwise. */
static long long parse_ms(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 19 || strspn(v, "0123456789") != n)
        return 0;
    errno = 0;
    long long x = strtoll(v, NULL, 10);
    return errno == 0 && x >= 1 && x <= MAX_MS ? x : 0;
}

/* The flags of `agent`, as cli.lua reads them (a flag's value is the next
 * argument, or follows `=` on a long flag). 0, or -1 to decline. */
static int parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){ .stream = 1, .mode = "auto" };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        char flag[16];
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq) { /* --flag=value: only for the flags that take one */
            size_t n = (size_t)(eq - a);
            if (n >= sizeof flag)
                return -1;
            memcpy(flag, a, n);
            flag[n] = '\0';
            a = flag;
            v = eq + 1;
        }
        int takes = !strcmp(a, "-m") || !strcmp(a, "--message") || !strcmp(a, "--model") ||
                    !strcmp(a, "--mode") || !strcmp(a, "--timeout-ms") || !strcmp(a, "--protocol") ||
                    !strcmp(a, "--session");
        if (takes && !v) {
            if (i + 1 >= argc)
                return -1;
            v = argv[++i];
        } else if (!takes && v) {
            return -1;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--message"))
            o->message = v;
        else if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--mode"))
            o->mode = v;
        else if (!strcmp(a, "--protocol"))
            o->protocol = v, o->protocol_given = 1;
        else if (!strcmp(a, "--session"))
            o->session = v;
        else if (!strcmp(a, "--timeout-ms")) {
            if (!(o->timeout_ms = parse_ms(v)))
                return -1;
        } else if (!strcmp(a, "--no-stream"))
            o->stream = 0;
        else if (!strcmp(a, "--raw"))
            o->raw = 1;
        else
            return -1; /* --help, --no-server, unknown */
    }
    if (strcmp(o->mode, "auto") != 0 && strcmp(o->mode, "daemon") != 0)
        return -1; /* oneshot is served in-process; anything else is a usage error */
    if (!o->message || !*o->message || strlen(o->message) > MAX_FAST_PROMPT)
        return -1;
    if (o->model && !*o->model)
        return -1;
    if (o->session && (!*o->session || strlen(o->session) > 256))
        return -1;
    /* KIRO_PROTOCOL must be usable even when --protocol overrides it (as
     * cli.lua checks it); the request always names one (else the server
     * would use its own). */
    const char *env_protocol = nonempty_env("KIRO_PROTOCOL");
    if (env_protocol && !known_protocol(env_protocol))
        return -1; /* a usage error */
    if (!o->protocol)
        o->protocol = env_protocol ? env_protocol : "auto";
    if (!known_protocol(o->protocol))
        return -1;
    return 0;
}

/* The backend's path as the server must see it (absolute: the server's
 * working directory is not ours), as cli.lua finds it: 0, or -1. With no
 * KIRO_CLI_PATH the agent has no backend of its own (buf empty, 0): the
 * server's counts. */
static int backend_path(char *buf, size_t n)
{
    const char *cli = nonempty_env("KIRO_CLI_PATH");
    if (!cli) {
        buf[0] = '\0';
        return 0;
    } else if (strchr(cli, '/') || kos_which(cli, buf, n) != 0) {
        if (strlen(cli) >= n)
            return -1;
        strcpy(buf, cli);
    }
    if (buf[0] == '/')
        return 0;
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    int w = snprintf(cwd + strlen(cwd), sizeof cwd - strlen(cwd), "/%s", buf);
    if (w < 0 || strlen(cwd) >= n)
        return -1;
    strcpy(buf, cwd);
    return 0;
}

/* KIRO_USE_DAEMON unset, empty or plainly on. Off (oneshot, in-process) and
 * unusable values (a usage error) are cli.lua's. */
static int daemon_allowed(void)
{
    const char *v = nonempty_env("KIRO_USE_DAEMON");
    static const char *const on[] = { "true", "1", "yes", "on" };
    if (!v)
        return 1;
    for (size_t i = 0; i < sizeof on / sizeof on[0]; i++)
        if (!strcasecmp(v, on[i]))
            return 1;
    return 0;
}

static char *finish_request(const struct opts *o, json_t *backend, json_t *prompt, size_t *len);

/* The request line, as kiro.client sends it; NULL to decline (a prompt that
 * is not UTF-8: jansson refuses it, and cli.lua says so). */
static char *request_line(const struct opts *o, const char *cli, size_t *len)
{
    if (!*cli) { /* none of our own: the server's, under our flags */
        json_t *backend = json_pack("{s:s}", "mode", o->mode);
        if (o->protocol_given)
            json_object_set_new(backend, "protocol", json_string(o->protocol));
        json_t *prompt = json_string(o->message);
        if (!backend || !prompt ||
            (o->model && json_object_set_new(backend, "model", json_string(o->model)) != 0)) {
            json_decref(backend);
            json_decref(prompt);
            return NULL;
        }
        return finish_request(o, backend, prompt, len);
    }
    json_t *env = json_object();
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        /* A name or value jansson refuses (not UTF-8) declines the call. */
        if (eq && kipc_backend_var(*e) &&
            json_object_setn_new(env, *e, (size_t)(eq - *e), json_string(eq + 1)) != 0) {
            json_decref(env);
            return NULL;
        }
    }
    const char *model = o->model ? o->model : nonempty_env("KIRO_MODEL");
    json_t *backend = json_pack("{s:s, s:s, s:o}", "cli", cli, "mode", o->mode, "env", env);
    if (backend)
        json_object_set_new(backend, "protocol", json_string(o->protocol));
    json_t *prompt = json_string(o->message);
    if (!backend || !prompt || (model && json_object_set_new(backend, "model", json_string(model)) != 0)) {
        json_decref(backend);
        json_decref(prompt);
        return NULL;
    }
    return finish_request(o, backend, prompt, len);
}

/* The request line around its backend and prompt (both taken). */
static char *finish_request(const struct opts *o, json_t *backend, json_t *prompt, size_t *len)
{
    json_t *req = json_pack("{s:s, s:i, s:b, s:o, s:o, s:{s:s, s:i}}", "op", "request", "id", 1, "stream",
                            o->stream, "backend", backend, "prompt", prompt, "expect", "version",
                            KIRO_VERSION, "proto", KIPC_PROTO);
    if (req && !o->raw)
        json_object_set_new(req, "template", json_string("default"));
    if (req && o->session)
        json_object_set_new(req, "session", json_string(o->session));
    if (req && o->timeout_ms)
        json_object_set_new(req, "timeout_ms", json_integer(o->timeout_ms));
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text)
        return NULL;
    /* json_dumps leaves room for its NUL: the newline takes its place. */
    *len = strlen(text);
    char *line = realloc(text, *len + 1);
    if (!line) {
        free(text);
        return NULL;
    }
    line[(*len)++] = '\n';
    return line;
}

/* What came back: the chunks go out as they arrive; the end is remembered. */
struct reply {
    int stream;
    int ended;     /* done, or an error */
    char last;     /* the last byte of the last chunk, 0 if it was empty */
    char code[32]; /* an error's code, "" when done */
    char *message; /* an error's message (malloc'd) */
};

static void set_error(struct reply *r, json_t *err)
{
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    snprintf(r->code, sizeof r->code, "%s", code ? code : "backend");
    r->message = strdup(msg ? msg : "");
    r->ended = 1;
}

static int on_line(void *ud, const char *line, size_t n)
{
    struct reply *r = ud;
    json_t *m = json_loadb(line, n, 0, NULL);
    if (!json_is_object(m)) {
        json_decref(m);
        return 0;
    }
    json_t *id = json_object_get(m, "id");
    if (json_is_integer(id) && json_integer_value(id) == 1) {
        json_t *chunk = json_object_get(m, "chunk"), *err = json_object_get(m, "error");
        if (json_is_string(chunk)) {
            size_t len = json_string_length(chunk);
            fwrite(json_string_value(chunk), 1, len, stdout);
            if (r->stream)
                fflush(stdout);
            r->last = len ? json_string_value(chunk)[len - 1] : 0;
        } else if (json_is_object(err)) {
            set_error(r, err);
        } else if (json_is_true(json_object_get(m, "done"))) {
            r->ended = 1;
        }
    } else {
        const char *op = json_string_value(json_object_get(m, "op"));
        if (op && !strcmp(op, "error"))
            set_error(r, m); /* about the connection: a line past the server's limits */
    }
    json_decref(m);
    return r->ended;
}

/* The call is over: the reply's last line ended, a failure's one-line reason. */
static int finish(struct reply *r, int rc, uint64_t limit)
{
    if (r->last && r->last != '\n')
        fputc('\n', stdout);
    fflush(stdout);
    if (rc == 0 && !r->code[0])
        return 0;
    char why[128];
    const char *code = r->code, *msg = r->message;
    if (rc == -ETIMEDOUT) {
        code = "timeout";
        snprintf(why, sizeof why, "no answer from the kiro-rt server within %llu ms",
                 (unsigned long long)limit);
        msg = why;
    } else if (rc != 0) {
        code = rc == -EPIPE || rc == -ECONNRESET ? "closed" : rc == -EMSGSIZE ? "protocol" : "backend";
        snprintf(why, sizeof why, "the kiro-rt server went away (%s)", strerror(-rc));
        msg = rc == -EPIPE || rc == -ECONNRESET ? why : strerror(-rc);
    }
    fprintf(stderr, "kiro-rt: %s: ", code);
    for (const char *p = msg ? msg : ""; *p; p++)
        fputc(*p == '\n' ? ' ' : *p, stderr);
    fputc('\n', stderr);
    return !strcmp(code, "timeout") ? EXIT_TIMEOUT : !strcmp(code, "config") ? EXIT_USAGE : EXIT_FAIL;
}

int kiro_agent_fast(int argc, char **argv)
{
    /* As under Lua: a reader that went away is EPIPE, not the end. */
    signal(SIGPIPE, SIG_IGN);
    struct opts o;
    char cli[PATH_MAX], sock[PATH_MAX];
    if (parse(argc, argv, &o) != 0 || !daemon_allowed() || backend_path(cli, sizeof cli) != 0 ||
        kipc_server_socket(sock, sizeof sock) != 0)
        return -1;
    kjson_seed();
    size_t len;
    char *line = request_line(&o, cli, &len);
    if (!line)
        return -1;
    int fd = kipc_dial(sock);
    if (fd < 0) { /* no server: cli.lua starts one */
        free(line);
        return -1;
    }
    uint64_t limit =
        (uint64_t)(o.timeout_ms ? o.timeout_ms : (long long)krt_defaults()->timeout_ms) + KIPC_GUARD_MS;
    struct reply r = { .stream = o.stream };
    int rc = kipc_exchange(fd, line, len, limit, on_line, &r);
    close(fd);
    free(line);
    /* A server of another version refuses the request unserved: cli.lua
     * replaces it. */
    if (rc == 0 && !strcmp(r.code, "version")) {
        free(r.message);
        return -1;
    }
    int status = finish(&r, rc, limit);
    free(r.message);
    return status;
}
