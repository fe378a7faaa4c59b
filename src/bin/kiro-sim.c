/* kiro-sim: the reference backend. It speaks the daemon protocol (SPEC 2.1)
 * and the oneshot chat protocol (SPEC 2.2), replies deterministically, and
 * has knobs for latency and faults so tests and benchmarks can provoke every
 * failure the runtime must survive. Plain blocking I/O: a backend is simple. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "version.h"

static const char usage[] =
    "Usage: kiro-sim daemon [--model M]\n"
    "       kiro-sim acp [--model M]     (also: kiro-sim --acp, as gemini and copilot)\n"
    "       kiro-sim chat [--no-interactive] [--model M]\n"
    "       kiro-sim --help | --version\n"
    "\n"
    "A reference LLM CLI backend for kiro-rt's quick start, tests and benchmarks.\n"
    "\n"
    "daemon  JSON Lines on stdin/stdout: {\"prompt\": ..., \"stream\": bool} in;\n"
    "        {\"content\": ...} out, or {\"content\": ..., \"done\": false} lines\n"
    "        ending with \"done\": true when streaming. Exits on stdin EOF.\n"
    "acp     the Agent Client Protocol (JSON-RPC 2.0 lines): initialize,\n"
    "        session/new, session/prompt (its text blocks are the prompt), the\n"
    "        reply as session/update agent_message_chunk notifications, then\n"
    "        {\"stopReason\": \"end_turn\"}; session/cancel ends a turn with\n"
    "        \"cancelled\". Unknown requests get -32601. Exits on stdin EOF.\n"
    "chat    reads the prompt from stdin until EOF, prints the reply on stdout.\n"
    "\n"
    "The reply is \"You said: X\" (\"[M] You said: X\" with --model M), where X is\n"
    "the last user turn of a \"User: ...\\n\\nAssistant: \" prompt, else the whole\n"
    "prompt. It streams in chunks split before each space (at most 64 chunks).\n"
    "\n"
    "Knobs (environment variables, so they pass through the runtime):\n"
    "  KIRO_SIM_STARTUP_MS      delay before serving anything (a CLI's start-up cost)\n"
    "  KIRO_SIM_LATENCY_MS      delay before the first chunk of each reply\n"
    "  KIRO_SIM_CHUNK_DELAY_MS  delay between chunks\n"
    "  KIRO_SIM_DONE            inline: last chunk carries \"done\": true (default);\n"
    "                           separate: a final {\"done\": true} line of its own\n"
    "  KIRO_SIM_GATE=PATH       before the last chunk of a streamed reply (daemon with\n"
    "                           stream true, or chat), wait until PATH exists\n"
    "  KIRO_SIM_LOG=PATH        append one line per event (start, request, exit)\n"
    "  KIRO_SIM_FAULT=NAME[,NAME...]  inject faults (below)\n"
    "  KIRO_SIM_FAULT_AFTER=N   per-request faults spare the first N requests of a process\n"
    "  KIRO_SIM_FAULT_EVERY=N   per-request faults hit only every Nth request of a process\n"
    "  KIRO_SIM_FAULT_FILE=PATH the fault is active only while PATH exists\n"
    "  KIRO_SIM_FAULT_MODE      daemon (default: acp too), chat, or all: where faults apply\n"
    "  KIRO_SIM_OVERLONG_BYTES  size of the overlong line (default 17 MiB)\n"
    "  KIRO_SIM_STDERR_BYTES    size of the stderr flood (default 10 MiB)\n"
    "ACP only:\n"
    "  KIRO_SIM_ACP_ASK=1       mid-turn, ask the client a vendor request (_kiro-sim/ask)\n"
    "                           and wait for its answer before going on\n"
    "  KIRO_SIM_ACP_PERMISSION=1  mid-turn, report a tool call and ask permission for\n"
    "                           it (logs event=permission outcome=OPTION|cancelled)\n"
    "  KIRO_SIM_ACP_UPDATES=1   before the reply: a thought, a plan, a tool call and\n"
    "                           its completion; after the first chunk, another thought\n"
    "  KIRO_SIM_ACP_NO_SET_MODEL=1  session/set_model is unknown (-32601). session/new\n"
    "                           always lists models sim-fast and sim-smart; a session\n"
    "                           set to one replies \"[M] You said: X\"\n"
    "  KIRO_SIM_ACP_STOP=REASON the turn's stopReason (default end_turn): refusal,\n"
    "                           max_tokens, max_turn_requests\n"
    "  KIRO_SIM_ACP_IGNORE_CANCEL=1  keep streaming after session/cancel (as real\n"
    "                           agents sometimes do)\n"
    "  An ACP daemon logs mode=daemon proto=acp; its request event adds session=S\n"
    "  turn=N (the Nth prompt of session S).\n"
    "\n"
    "Faults:\n"
    "  crash-before-chunk  exit(3) after reading a request, before any reply\n"
    "  crash-mid-stream    exit(3) after the first chunk (non-streamed: half a line)\n"
    "  hang                read the request, then never answer nor read again\n"
    "  noise               print a banner and a non-object JSON line before replying\n"
    "  overlong            reply with one line of KIRO_SIM_OVERLONG_BYTES\n"
    "  stderr-flood        write KIRO_SIM_STDERR_BYTES to stderr before replying\n"
    "  error               reply {\"error\": \"simulated backend failure\"}\n"
    "  silent-error        print an error on stderr and send no reply (the seed's\n"
    "                      Python sample does this)\n"
    "  ansi                (chat) colour the reply with ANSI escape sequences\n"
    "  no-daemon           no daemon subcommand: exit 2 like a CLI too old for it\n"
    "  no-acp              no acp subcommand: exit 2 the same way\n"
    "  die-at-start        daemon exits 1 right after start-up\n"
    "  auth                (acp) session/new fails with -32000, as an agent without\n"
    "                      credentials does; initialize lists an auth method\n"
    "Hostile daemons (each breaks the protocol in one way):\n"
    "  always-stream       stream every reply, whatever \"stream\" the request said\n"
    "  wrong-type          reply {\"content\": 123}\n"
    "  double-reply        follow each reply with a second one, \"[extra]\"\n"
    "  grandchild          at start, fork a child that holds stdout open and sleeps\n"
    "                      (it logs event=grandchild child=PID)\n"
    "\n"
    "The start event logs the open descriptors (fds=0,1,2 for a clean start).\n";

/* Knobs, read once at start-up. */
static char *faults; /* ",name,name," */
static const char *fault_mode = "daemon";
static const char *log_path, *gate_path;
static long latency_ms, chunk_delay_ms;
static int done_separate;
static long fault_after, fault_every;
static const char *fault_file;
static const char *mode_name;  /* daemon (JSON Lines or ACP) or chat */
static const char *proto = ""; /* " proto=acp" in the log for an ACP daemon */
static long served;

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    /* Decimal digits only: no sign, no blanks, no hex, no overflow. */
    if (v[strspn(v, "0123456789")] || *end || errno == ERANGE || n < 0) {
        fprintf(stderr, "kiro-sim: %s must be a non-negative integer (got '%s')\n", name, v);
        exit(2);
    }
    return n;
}

static void sleep_ms(long ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void sim_log(const char *fmt, ...)
{
    const char *path = log_path;
    if (!path)
        return;
    char line[512];
    int n = snprintf(line, sizeof line, "pid=%d mode=%s%s ", (int)getpid(), mode_name, proto);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    line[n++] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, line, (size_t)n);
        (void)w;
        close(fd);
    }
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(0); /* the reader is gone */
        }
        p += w;
        n -= (size_t)w;
    }
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Is `name` the active fault for this mode (and this request)? */
static int fault_on(const char *name, int per_request)
{
    char key[64];
    if (!faults) /* the common case costs nothing */
        return 0;
    snprintf(key, sizeof key, ",%s,", name);
    if (!strstr(faults, key))
        return 0;
    if (fault_file && !exists(fault_file))
        return 0;
    if (strcmp(fault_mode, "all") != 0 && strcmp(fault_mode, mode_name) != 0)
        return 0;
    if (per_request && served < fault_after)
        return 0;
    if (per_request && fault_every && (served + 1) % fault_every != 0)
        return 0;
    return 1;
}

static void crash(const char *what)
{
    fprintf(stderr, "kiro-sim: panic: simulated crash %s\n", what);
    sim_log("event=crash what=%s", what);
    _exit(3);
}

/* The start event, with the descriptors this process was given: a backend
 * should get its three pipes and nothing else. */
static void log_start(void)
{
    char fds[256] = "";
    size_t n = 0;
    for (int fd = 0; fd < 1024 && n + 8 < sizeof fds; fd++)
        if (fcntl(fd, F_GETFD) != -1)
            n += (size_t)snprintf(fds + n, sizeof fds - n, "%s%d", n ? "," : "", fd);
    sim_log("event=start fds=%s", fds);
}

/* Then the grandchild fault: a helper that holds stdout open, as a
 * forgotten one would. */
static void log_start_and_fork(void)
{
    log_start();
    if (!fault_on("grandchild", 0))
        return;
    pid_t child = fork();
    if (child == 0) {
        sleep_ms(3600 * 1000L);
        _exit(0);
    }
    sim_log("event=grandchild child=%d", (int)child);
}

static void hang(void)
{
    sim_log("event=hang");
    for (;;)
        pause();
}

/* The reply text for a prompt: "[M] You said: X". */
static char *reply_for(const char *prompt, size_t len, const char *model, size_t *out_len)
{
    static const char suffix[] = "\n\nAssistant: ";
    static const char user[] = "User: ";
    const char *x = prompt;
    size_t xl = len, sl = sizeof suffix - 1;
    if (len >= sl && memcmp(prompt + len - sl, suffix, sl) == 0) {
        const char *last = NULL;
        for (const char *p = prompt; p + sizeof user - 1 <= prompt + len - sl; p++)
            if (memcmp(p, user, sizeof user - 1) == 0 && (p == prompt || p[-1] == '\n'))
                last = p;
        if (last) {
            x = last + sizeof user - 1;
            xl = (size_t)(prompt + len - sl - x);
        }
    }
    char prefix[256];
    int pl = model ? snprintf(prefix, sizeof prefix, "[%s] You said: ", model)
                   : snprintf(prefix, sizeof prefix, "You said: ");
    char *r = malloc((size_t)pl + xl + 1);
    if (!r)
        abort();
    memcpy(r, prefix, (size_t)pl);
    memcpy(r + pl, x, xl);
    r[pl + xl] = '\0';
    *out_len = (size_t)pl + xl;
    return r;
}

/* Chunk boundaries: before each space, merged so there are at most 64.
 * Never inside a UTF-8 sequence, since a space is ASCII. */
static size_t split(const char *s, size_t n, size_t *cuts, size_t maxcuts)
{
    size_t words = 1;
    for (size_t i = 1; i < n; i++)
        if (s[i] == ' ')
            words++;
    size_t group = (words + maxcuts - 1) / maxcuts, k = 0, w = 0;
    cuts[k++] = 0;
    for (size_t i = 1; i < n; i++)
        if (s[i] == ' ' && ++w % group == 0 && k < maxcuts)
            cuts[k++] = i;
    return k;
}

/* double-reply: a second reply line, sent in the same write as the end of
 * the first (so the runtime sees both at once, as a pipe often delivers). */
static const char *trailer;

static void emit_json(json_t *obj)
{
    char *txt = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!txt)
        abort();
    size_t n = strlen(txt), tn = trailer ? strlen(trailer) : 0;
    txt = realloc(txt, n + 2 + tn);
    if (!txt)
        abort();
    txt[n++] = '\n';
    if (tn)
        memcpy(txt + n, trailer, tn);
    trailer = NULL;
    write_all(1, txt, n + tn);
    free(txt);
}

static void wait_gate(void)
{
    if (!gate_path)
        return;
    while (!exists(gate_path))
        sleep_ms(5);
}

static void before_reply(long latency)
{
    if (fault_on("noise", 1)) {
        const char noise[] = "kiro-sim banner: this line is not JSON\n[1,2,3]\n\n";
        write_all(1, noise, sizeof noise - 1);
    }
    if (fault_on("stderr-flood", 1)) {
        long total = env_long("KIRO_SIM_STDERR_BYTES", 10L << 20);
        char line[128];
        memset(line, 'e', sizeof line - 1);
        line[sizeof line - 1] = '\n';
        for (long done = 0; done < total; done += (long)sizeof line)
            write_all(2, line, sizeof line);
    }
    sleep_ms(latency);
}

static void serve_daemon_request(const char *prompt, size_t len, int stream, const char *model)
{
    long latency = latency_ms, gap = chunk_delay_ms;
    int separate = done_separate;

    sim_log("event=request n=%ld bytes=%zu stream=%d", served + 1, len, stream);
    if (fault_on("crash-before-chunk", 1))
        crash("before the first chunk");
    if (fault_on("hang", 1))
        hang();
    if (fault_on("silent-error", 1)) {
        fprintf(stderr, "Error: simulated failure, no reply sent\n");
        served++;
        return;
    }
    before_reply(latency);
    if (fault_on("error", 1)) {
        json_t *o = json_object();
        json_object_set_new(o, "error", json_string("simulated backend failure"));
        emit_json(o);
        served++;
        return;
    }
    if (fault_on("wrong-type", 1)) {
        write_all(1, "{\"content\": 123}\n", 17);
        served++;
        return;
    }
    if (fault_on("overlong", 1)) {
        long n = env_long("KIRO_SIM_OVERLONG_BYTES", 17L << 20);
        char *line = malloc((size_t)n + 32);
        int h = sprintf(line, "{\"content\": \"");
        memset(line + h, 'x', (size_t)n);
        memcpy(line + h + n, "\"}\n", 3);
        write_all(1, line, (size_t)h + (size_t)n + 3);
        free(line);
        served++;
        return;
    }

    size_t rl;
    char *reply = reply_for(prompt, len, model, &rl);
    if (fault_on("always-stream", 1))
        stream = 1;
    const char *extra = fault_on("double-reply", 1) ? "{\"content\": \"[extra]\"}\n" : NULL;
    if (!stream) {
        if (fault_on("crash-mid-stream", 1)) {
            write_all(1, "{\"content\": \"You sa", 19);
            crash("in the middle of a reply");
        }
        json_t *o = json_object();
        json_object_set_new(o, "content", json_stringn(reply, rl));
        trailer = extra;
        emit_json(o);
    } else {
        size_t cuts[64];
        size_t k = split(reply, rl, cuts, 64);
        for (size_t i = 0; i < k; i++) {
            size_t end = i + 1 < k ? cuts[i + 1] : rl;
            int last = i + 1 == k;
            if (i > 0)
                sleep_ms(gap);
            if (last)
                wait_gate();
            json_t *o = json_object();
            json_object_set_new(o, "content", json_stringn(reply + cuts[i], end - cuts[i]));
            json_object_set_new(o, "done", json_boolean(last && !separate));
            if (last && !separate)
                trailer = extra;
            emit_json(o);
            if (i == 0 && fault_on("crash-mid-stream", 1))
                crash("in the middle of a stream");
        }
        if (separate) {
            json_t *o = json_object();
            json_object_set_new(o, "done", json_true());
            trailer = extra;
            emit_json(o);
        }
    }
    free(reply);
    served++;
}

/* Reads one line of any length from fd 0; NULL at EOF. */
static size_t line_have, line_pos; /* read_line's buffer: filled, handed out */

static char *read_line(size_t *len)
{
    static char buf[65536];
    char *line = NULL;
    size_t n = 0;
    for (;;) {
        if (line_pos == line_have) {
            ssize_t r = read(0, buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                if (line) {
                    *len = n;
                    return line;
                }
                return NULL;
            }
            line_have = (size_t)r;
            line_pos = 0;
        }
        char *nl = memchr(buf + line_pos, '\n', line_have - line_pos);
        size_t take = nl ? (size_t)(nl - (buf + line_pos)) : line_have - line_pos;
        line = realloc(line, n + take + 1);
        memcpy(line + n, buf + line_pos, take);
        n += take;
        line[n] = '\0';
        line_pos += take + (nl ? 1 : 0);
        if (nl) {
            *len = n;
            return line;
        }
    }
}

/* Bytes read_line holds that it has not handed out yet. */
static int read_buffered(void)
{
    return line_pos < line_have;
}

/* A long-lived mode starts: as a CLI without the subcommand would refuse it
 * (fault `absent`), after its start-up delay, or dying at start. Returns -1
 * to go on, else the exit status. */
static int start_up(const char *subcommand, const char *absent)
{
    if (fault_on(absent, 0)) {
        fprintf(stderr, "error: unrecognized subcommand '%s'\n\nUsage: kiro-cli <COMMAND>\n", subcommand);
        return 2;
    }
    sleep_ms(env_long("KIRO_SIM_STARTUP_MS", 0));
    log_start_and_fork();
    if (fault_on("die-at-start", 0)) {
        fprintf(stderr, "fatal: simulated start-up failure\n");
        sim_log("event=exit status=1");
        return 1;
    }
    return -1;
}

static int run_daemon(const char *model)
{
    int rc = start_up("daemon", "no-daemon");
    if (rc >= 0)
        return rc;
    size_t len;
    char *line;
    while ((line = read_line(&len))) {
        json_error_t err;
        json_t *req = json_loadb(line, len, JSON_ALLOW_NUL, &err);
        free(line);
        json_t *p = req ? json_object_get(req, "prompt") : NULL;
        json_t *s = req ? json_object_get(req, "stream") : NULL;
        if (!json_is_string(p) || !json_is_boolean(s)) {
            json_t *o = json_object();
            json_object_set_new(o, "error",
                                json_string("invalid request: need prompt (string) and stream (bool)"));
            emit_json(o);
        } else {
            serve_daemon_request(json_string_value(p), json_string_length(p), json_is_true(s), model);
        }
        json_decref(req);
    }
    sim_log("event=exit status=0");
    return 0;
}

/* ---- acp: the Agent Client Protocol ------------------------------------ */

static void rpc_send(json_t *msg)
{
    json_object_set_new(msg, "jsonrpc", json_string("2.0"));
    emit_json(msg);
}

static void rpc_error(json_t *id, int code, const char *message)
{
    rpc_send(json_pack("{s:O, s:{s:i, s:s}}", "id", id, "error", "code", code, "message", message));
}

static void acp_update(const char *sid, json_t *update)
{
    rpc_send(json_pack("{s:s, s:{s:s, s:o}}", "method", "session/update", "params", "sessionId", sid,
                       "update", update));
}

/* The ACP knobs, read once at start-up like the others. */
static struct {
    long ask, permission, ignore_cancel, no_set_model;
    int updates;
    const char *stop;
} acp_knobs;

/* A session and its turns so far (session memory: the log shows reuse). */
struct session {
    char id[32];
    long turns;
    char model[64]; /* session/set_model's; "" for the process's */
};
static struct session *sessions;
static size_t nsessions;

/* Session ids are "sim-session-N", N from 1: found by their number. */
static struct session *find_session(const char *id)
{
    static const char prefix[] = "sim-session-";
    if (strncmp(id, prefix, sizeof prefix - 1) != 0)
        return NULL;
    char *end;
    unsigned long n = strtoul(id + sizeof prefix - 1, &end, 10);
    if (*end || n == 0 || n > nsessions || strcmp(sessions[n - 1].id, id) != 0)
        return NULL;
    return &sessions[n - 1];
}

/* Messages read while a turn waits for something else: seen again by the
 * main loop once the turn is over. */
static json_t *backlog;

static json_t *read_message(void)
{
    size_t len;
    char *line = read_line(&len);
    if (!line)
        return NULL;
    json_t *m = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
    free(line);
    return m ? m : json_object(); /* not JSON: an empty object, ignored */
}

/* Is there a line to read now (without blocking)? */
static int readable(void)
{
    struct pollfd p = { .fd = 0, .events = POLLIN };
    return read_buffered() || poll(&p, 1, 0) > 0;
}

static int is_cancel(json_t *m, const char *sid)
{
    const char *method = json_string_value(json_object_get(m, "method"));
    const char *s = json_string_value(json_object_get(json_object_get(m, "params"), "sessionId"));
    return method && strcmp(method, "session/cancel") == 0 && s && strcmp(s, sid) == 0;
}

/* Sends a request to the client and waits for its answer: the response
 * (result or error), or NULL at EOF. A session/cancel meanwhile sets
 * *cancelled. */
static json_t *ask(const char *method, json_t *params, const char *sid, int *cancelled)
{
    static long next;
    char id[32];
    snprintf(id, sizeof id, "sim-%ld", next++);
    rpc_send(json_pack("{s:s, s:s, s:o}", "id", id, "method", method, "params", params));
    json_t *m;
    while ((m = read_message())) {
        const char *rid = json_string_value(json_object_get(m, "id"));
        if (rid && strcmp(rid, id) == 0 && !json_object_get(m, "method"))
            return m;
        if (is_cancel(m, sid))
            *cancelled = 1;
        else
            json_array_append(backlog, m);
        json_decref(m);
    }
    return NULL;
}

/* Between chunks: a session/cancel for this turn stops it (unless told to
 * ignore cancels); anything else waits in the backlog. */
static int cancel_arrived(const char *sid)
{
    int cancelled = 0;
    while (readable()) {
        json_t *m = read_message();
        if (!m)
            break;
        if (is_cancel(m, sid))
            cancelled = 1;
        else
            json_array_append(backlog, m);
        json_decref(m);
    }
    if (cancelled)
        sim_log("event=cancel session=%s", sid);
    return cancelled && !acp_knobs.ignore_cancel;
}

static void acp_permission(const char *sid, int *cancelled)
{
    acp_update(sid,
               json_pack("{s:s, s:s, s:s, s:s, s:s}", "sessionUpdate", "tool_call", "toolCallId", "sim-1",
                         "title", "Editing kiro-sim.conf", "kind", "edit", "status", "pending"));
    json_t *r = ask("session/request_permission",
                    json_pack("{s:s, s:{s:s, s:s}, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}", "sessionId", sid,
                              "toolCall", "toolCallId", "sim-1", "title", "Editing kiro-sim.conf", "options",
                              "kind", "allow_once", "name", "Allow", "optionId", "sim-allow", "kind",
                              "reject_once", "name", "Skip", "optionId", "sim-reject"),
                    sid, cancelled);
    json_t *o = json_object_get(json_object_get(r, "result"), "outcome");
    const char *id = json_string_value(json_object_get(o, "optionId"));
    sim_log("event=permission outcome=%s", id ? id : "cancelled");
    json_decref(r);
}

static void serve_acp_prompt(json_t *id, const char *sid, const char *prompt, size_t len, const char *model)
{
    struct session *ses = find_session(sid);
    sim_log("event=request n=%ld bytes=%zu stream=1 session=%s turn=%ld", served + 1, len, sid, ++ses->turns);
    if (fault_on("crash-before-chunk", 1))
        crash("before the first chunk");
    if (fault_on("hang", 1))
        hang();
    served++;
    if (fault_on("silent-error", 1)) {
        fprintf(stderr, "Error: simulated failure, no reply sent\n");
        return;
    }
    before_reply(latency_ms);
    if (fault_on("error", 1)) {
        rpc_error(id, -32603, "simulated backend failure");
        return;
    }
    int cancelled = 0;
    if (acp_knobs.ask) {
        json_t *r = ask("_kiro-sim/ask", json_object(), sid, &cancelled);
        json_t *e = json_object_get(r, "error");
        sim_log("event=asked answer=%s code=%lld",
                !r  ? "none"
                : e ? "error"
                    : "result",
                (long long)json_integer_value(json_object_get(e, "code")));
        json_decref(r);
    }
    if (acp_knobs.permission)
        acp_permission(sid, &cancelled);
    int updates = acp_knobs.updates;
    if (updates) {
        acp_update(sid, json_pack("{s:s, s:{s:s, s:s}}", "sessionUpdate", "agent_thought_chunk", "content",
                                  "type", "text", "text", "Thinking it over"));
        acp_update(sid, json_pack("{s:s, s:[{s:s, s:s, s:s}]}", "sessionUpdate", "plan", "entries", "content",
                                  "Read the prompt", "priority", "high", "status", "in_progress"));
        acp_update(sid,
                   json_pack("{s:s, s:s, s:s, s:s, s:s}", "sessionUpdate", "tool_call", "toolCallId", "sim-2",
                             "title", "Reading project files", "kind", "read", "status", "pending"));
        acp_update(sid, json_pack("{s:s, s:s, s:s}", "sessionUpdate", "tool_call_update", "toolCallId",
                                  "sim-2", "status", "completed"));
    }
    if (fault_on("overlong", 1)) {
        long n = env_long("KIRO_SIM_OVERLONG_BYTES", 17L << 20);
        char *text = malloc((size_t)n + 1);
        memset(text, 'x', (size_t)n);
        acp_update(sid, json_pack("{s:s, s:{s:s, s:s%}}", "sessionUpdate", "agent_message_chunk", "content",
                                  "type", "text", "text", text, (size_t)n));
        free(text);
        rpc_send(json_pack("{s:O, s:{s:s}}", "id", id, "result", "stopReason", "end_turn"));
        return;
    }
    if (fault_on("wrong-type", 1)) {
        acp_update(sid, json_pack("{s:s, s:{s:s, s:i}}", "sessionUpdate", "agent_message_chunk", "content",
                                  "type", "text", "text", 123));
        rpc_send(json_pack("{s:O, s:{s:s}}", "id", id, "result", "stopReason", "end_turn"));
        return;
    }
    size_t rl;
    char *reply = reply_for(prompt, len, ses->model[0] ? ses->model : model, &rl);
    size_t cuts[64];
    size_t k = split(reply, rl, cuts, 64);
    for (size_t i = 0; i < k && !(cancelled && !acp_knobs.ignore_cancel); i++) {
        size_t end = i + 1 < k ? cuts[i + 1] : rl;
        if (i > 0) {
            sleep_ms(chunk_delay_ms);
            if (cancel_arrived(sid)) {
                cancelled = 1;
                break;
            }
        }
        /* At the gate, a cancel still gets through. */
        while (i + 1 == k && gate_path && !exists(gate_path) && !cancelled) {
            cancelled = cancel_arrived(sid);
            sleep_ms(5);
        }
        if (cancelled)
            break;
        acp_update(sid, json_pack("{s:s, s:{s:s, s:s%}}", "sessionUpdate", "agent_message_chunk", "content",
                                  "type", "text", "text", reply + cuts[i], end - cuts[i]));
        if (i == 0 && fault_on("crash-mid-stream", 1))
            crash("in the middle of a stream");
        if (i == 0 && updates)
            acp_update(sid, json_pack("{s:s, s:{s:s, s:s}}", "sessionUpdate", "agent_thought_chunk",
                                      "content", "type", "text", "text", "Almost there"));
    }
    free(reply);
    /* double-reply: the turn's response twice, in one write. */
    if (fault_on("double-reply", 1))
        trailer = "{\"jsonrpc\":\"2.0\",\"id\":-7,\"result\":{\"stopReason\":\"end_turn\"}}\n";
    const char *stop = acp_knobs.stop;
    rpc_send(json_pack("{s:O, s:{s:s}}", "id", id, "result", "stopReason",
                       cancelled       ? "cancelled"
                       : stop && *stop ? stop
                                       : "end_turn"));
}

/* The prompt's text blocks, joined (a malloc'd string), or NULL. */
static char *prompt_text(json_t *blocks, size_t *len)
{
    size_t i;
    json_t *b;
    char *out = malloc(1);
    *len = 0;
    json_array_foreach(blocks, i, b)
    {
        json_t *t = json_object_get(b, "text");
        if (!json_is_string(t))
            continue;
        size_t n = json_string_length(t);
        out = realloc(out, *len + n + 1);
        memcpy(out + *len, json_string_value(t), n);
        *len += n;
    }
    if (!json_is_array(blocks)) {
        free(out);
        return NULL;
    }
    out[*len] = '\0';
    return out;
}

static void acp_message(json_t *m, const char *model)
{
    json_t *id = json_object_get(m, "id");
    const char *method = json_string_value(json_object_get(m, "method"));
    json_t *params = json_object_get(m, "params");
    if (!method || !id)
        return; /* a notification (a stray cancel), a response, or not JSON-RPC */
    if (strcmp(method, "initialize") == 0) {
        json_t *res = json_pack("{s:i, s:{s:b}, s:{s:s, s:s}}", "protocolVersion", 1, "agentCapabilities",
                                "loadSession", 0, "agentInfo", "name", "kiro-sim", "version", KIRO_VERSION);
        if (fault_on("auth", 0))
            json_object_set_new(res, "authMethods",
                                json_pack("[{s:s, s:s}]", "id", "sim-key", "name", "A key in KIRO_SIM_KEY"));
        rpc_send(json_pack("{s:O, s:o}", "id", id, "result", res));
    } else if (strcmp(method, "session/new") == 0) {
        const char *cwd = json_string_value(json_object_get(params, "cwd"));
        if (!cwd || cwd[0] != '/' || !json_is_array(json_object_get(params, "mcpServers"))) {
            rpc_error(id, -32602, "Invalid params: cwd (absolute) and mcpServers are required");
        } else if (fault_on("auth", 0)) {
            rpc_error(id, -32000, "Simulated agent needs credentials");
        } else {
            sessions = realloc(sessions, (nsessions + 1) * sizeof *sessions);
            struct session *s = &sessions[nsessions];
            snprintf(s->id, sizeof s->id, "sim-session-%zu", ++nsessions);
            s->turns = 0;
            s->model[0] = '\0';
            rpc_send(json_pack("{s:O, s:{s:s, s:{s:[{s:s, s:s}, {s:s, s:s}], s:s}}}", "id", id, "result",
                               "sessionId", s->id, "models", "availableModels", "modelId", "sim-fast", "name",
                               "Fast", "modelId", "sim-smart", "name", "Smart", "currentModelId",
                               "sim-fast"));
        }
    } else if (strcmp(method, "session/prompt") == 0) {
        const char *sid = json_string_value(json_object_get(params, "sessionId"));
        size_t len;
        char *text = prompt_text(json_object_get(params, "prompt"), &len);
        if (!sid || !find_session(sid))
            rpc_error(id, -32603, "Internal error: session not found");
        else if (!text)
            rpc_error(id, -32602, "Invalid params: prompt must be an array of content blocks");
        else
            serve_acp_prompt(id, sid, text, len, model);
        free(text);
    } else if (strcmp(method, "session/set_model") == 0 && !acp_knobs.no_set_model) {
        const char *sid = json_string_value(json_object_get(params, "sessionId"));
        struct session *s = sid ? find_session(sid) : NULL;
        const char *want = json_string_value(json_object_get(params, "modelId"));
        if (!s || !want || (strcmp(want, "sim-fast") != 0 && strcmp(want, "sim-smart") != 0)) {
            rpc_error(id, -32602, "Invalid params: unknown session or model");
        } else {
            snprintf(s->model, sizeof s->model, "%s", want);
            sim_log("event=set_model session=%s model=%s", s->id, want);
            rpc_send(json_pack("{s:O, s:{}}", "id", id, "result"));
        }
    } else {
        rpc_error(id, -32601, "Method not found");
    }
}

static int run_acp(const char *model)
{
    acp_knobs.ask = env_long("KIRO_SIM_ACP_ASK", 0);
    acp_knobs.permission = env_long("KIRO_SIM_ACP_PERMISSION", 0);
    acp_knobs.ignore_cancel = env_long("KIRO_SIM_ACP_IGNORE_CANCEL", 0);
    acp_knobs.no_set_model = env_long("KIRO_SIM_ACP_NO_SET_MODEL", 0);
    acp_knobs.updates = (int)env_long("KIRO_SIM_ACP_UPDATES", 0);
    acp_knobs.stop = getenv("KIRO_SIM_ACP_STOP");
    int rc = start_up("acp", "no-acp");
    if (rc >= 0)
        return rc;
    backlog = json_array();
    for (;;) {
        json_t *m;
        if (json_array_size(backlog)) {
            m = json_incref(json_array_get(backlog, 0));
            json_array_remove(backlog, 0);
        } else if (!(m = read_message())) {
            break;
        }
        acp_message(m, model);
        json_decref(m);
    }
    json_decref(backlog);
    free(sessions);
    sim_log("event=exit status=0");
    return 0;
}

static int run_chat(const char *model)
{
    sleep_ms(env_long("KIRO_SIM_STARTUP_MS", 0));
    log_start_and_fork();
    size_t len = 0, cap = 65536;
    char *prompt = malloc(cap);
    for (;;) {
        if (len == cap)
            prompt = realloc(prompt, cap *= 2);
        ssize_t r = read(0, prompt + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    sim_log("event=request n=1 bytes=%zu stream=0", len);
    if (fault_on("crash-before-chunk", 1))
        crash("before the first chunk");
    if (fault_on("hang", 1))
        hang();
    if (fault_on("error", 1) || fault_on("silent-error", 1)) {
        fprintf(stderr, "Error: simulated backend failure\n");
        free(prompt);
        return 1;
    }
    before_reply(latency_ms);
    long gap = chunk_delay_ms;
    int ansi = fault_on("ansi", 0);
    size_t rl;
    char *reply = reply_for(prompt, len, model, &rl);
    size_t cuts[64];
    size_t k = split(reply, rl, cuts, 64);
    for (size_t i = 0; i < k; i++) {
        size_t end = i + 1 < k ? cuts[i + 1] : rl;
        if (i > 0)
            sleep_ms(gap);
        if (i + 1 == k)
            wait_gate();
        if (ansi)
            write_all(1, "\x1b[1;32m", 7);
        write_all(1, reply + cuts[i], end - cuts[i]);
        if (ansi)
            write_all(1, "\x1b[0m\x1b]0;title\x07", 14);
        if (i == 0 && fault_on("crash-mid-stream", 1))
            crash("in the middle of a reply");
    }
    free(reply);
    free(prompt);
    sim_log("event=exit status=0");
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL;
    const char *model = NULL;
    signal(SIGPIPE, SIG_IGN);
    if (!cmd || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage, cmd ? stdout : stderr);
        return cmd ? 0 : 2;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("kiro-sim %s\n", KIRO_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--acp") == 0)
        cmd = "acp";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            model = argv[++i];
        else if (strcmp(argv[i], "--no-interactive") == 0 && strcmp(cmd, "chat") == 0)
            ;
        else {
            fprintf(stderr, "kiro-sim: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    const char *f = getenv("KIRO_SIM_FAULT");
    if (f && *f) {
        faults = malloc(strlen(f) + 3);
        if (!faults)
            abort();
        sprintf(faults, ",%s,", f);
    }
    fault_after = env_long("KIRO_SIM_FAULT_AFTER", 0);
    fault_every = env_long("KIRO_SIM_FAULT_EVERY", 0);
    fault_file = getenv("KIRO_SIM_FAULT_FILE");
    if (fault_file && !*fault_file)
        fault_file = NULL;
    const char *v = getenv("KIRO_SIM_FAULT_MODE");
    if (v && *v)
        fault_mode = v;
    if (strcmp(fault_mode, "daemon") && strcmp(fault_mode, "chat") && strcmp(fault_mode, "all")) {
        fprintf(stderr, "kiro-sim: KIRO_SIM_FAULT_MODE must be daemon, chat or all (got '%s')\n", fault_mode);
        return 2;
    }
    log_path = getenv("KIRO_SIM_LOG");
    if (log_path && !*log_path)
        log_path = NULL;
    gate_path = getenv("KIRO_SIM_GATE");
    if (gate_path && !*gate_path)
        gate_path = NULL;
    latency_ms = env_long("KIRO_SIM_LATENCY_MS", 0);
    chunk_delay_ms = env_long("KIRO_SIM_CHUNK_DELAY_MS", 0);
    v = getenv("KIRO_SIM_DONE");
    done_separate = v && strcmp(v, "separate") == 0;
    if (v && *v && !done_separate && strcmp(v, "inline") != 0) {
        fprintf(stderr, "kiro-sim: KIRO_SIM_DONE must be inline or separate (got '%s')\n", v);
        return 2;
    }
    int rc = 2;
    if (strcmp(cmd, "daemon") == 0) {
        mode_name = "daemon";
        rc = run_daemon(model);
    } else if (strcmp(cmd, "acp") == 0) {
        mode_name = "daemon"; /* the same faults, the same log, as the JSON Lines daemon */
        proto = " proto=acp";
        rc = run_acp(model);
    } else if (strcmp(cmd, "chat") == 0) {
        mode_name = "chat";
        rc = run_chat(model);
    }
    free(faults);
    if (mode_name)
        return rc;
    fprintf(stderr, "kiro-sim: unknown command '%s'\n%s", cmd, usage);
    return 2;
}
