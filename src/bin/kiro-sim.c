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

#include "buf.h"
#include "jpick.h"
#include "jsonstr.h"
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
    "  KIRO_SIM_ACP_TOOL_MS=N   with ACP_UPDATES: the tool call takes N ms\n"
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

static void out_flush(void);

static void sleep_ms(long ms)
{
    if (ms <= 0)
        return;
    out_flush();
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

/* Standard output, gathered: what the sim says goes out in one write just
 * before it would wait (to read, to sleep, at a gate) or end, as a real
 * agent's buffered stdout does. A zero-latency exchange then costs one
 * write a side, whatever the protocol's number of messages. */
static struct {
    char *data;
    size_t len, cap;
} pending_out;

static void out_flush(void)
{
    write_all(1, pending_out.data, pending_out.len);
    pending_out.len = 0;
}

static void out_reserve(size_t n)
{
    if (pending_out.len + n > pending_out.cap) {
        pending_out.cap = (pending_out.len + n) * 2;
        pending_out.data = realloc(pending_out.data, pending_out.cap);
        if (!pending_out.data)
            abort();
    }
}

static void out_put(const char *p, size_t n)
{
    out_reserve(n);
    memcpy(pending_out.data + pending_out.len, p, n);
    pending_out.len += n;
}

static void out_text(const char *s)
{
    out_put(s, strlen(s));
}

/* A JSON string, quotes and all: text the sim was given (checked UTF-8 by
 * the parse), or made from it. */
static void out_string(const char *s, size_t n)
{
    size_t esc;
    if (kjstr_measure(s, n, &esc, NULL) != 0)
        abort();
    out_reserve(esc + 2);
    char *w = pending_out.data + pending_out.len;
    *w++ = '"';
    w = kjstr_write(w, s, n);
    *w++ = '"';
    pending_out.len = (size_t)(w - pending_out.data);
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
    out_flush();
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
    out_flush();
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

/* The end of a line of output, and the double-reply trailer if one waits. */
static void end_line(void)
{
    out_put("\n", 1);
    if (trailer)
        out_text(trailer);
    trailer = NULL;
}

static void emit_json(json_t *obj)
{
    char *txt = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!txt)
        abort();
    out_text(txt);
    end_line();
    free(txt);
}

/* A JSON Lines reply: {"content": TEXT} with "done" when done >= 0. */
static void emit_content(const char *text, size_t n, int done)
{
    out_text("{\"content\":");
    out_string(text, n);
    out_text(done < 0 ? "}" : done ? ",\"done\":true}" : ",\"done\":false}");
    end_line();
}

static void wait_gate(void)
{
    if (!gate_path)
        return;
    out_flush(); /* what came before the gate is out, as a real stream's would be */
    while (!exists(gate_path))
        sleep_ms(5);
}

static void before_reply(long latency)
{
    if (fault_on("noise", 1)) {
        const char noise[] = "kiro-sim banner: this line is not JSON\n[1,2,3]\n\n";
        out_put(noise, sizeof noise - 1);
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
        out_text("{\"error\":\"simulated backend failure\"}");
        end_line();
        served++;
        return;
    }
    if (fault_on("wrong-type", 1)) {
        out_put("{\"content\": 123}\n", 17);
        served++;
        return;
    }
    if (fault_on("overlong", 1)) {
        long n = env_long("KIRO_SIM_OVERLONG_BYTES", 17L << 20);
        char *line = malloc((size_t)n + 32);
        int h = sprintf(line, "{\"content\": \"");
        memset(line + h, 'x', (size_t)n);
        memcpy(line + h + n, "\"}\n", 3);
        out_put(line, (size_t)h + (size_t)n + 3);
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
            out_put("{\"content\": \"You sa", 19);
            crash("in the middle of a reply");
        }
        trailer = extra;
        emit_content(reply, rl, -1);
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
            if (last && !separate)
                trailer = extra;
            emit_content(reply + cuts[i], end - cuts[i], last && !separate);
            if (i == 0 && fault_on("crash-mid-stream", 1))
                crash("in the middle of a stream");
        }
        if (separate) {
            trailer = extra;
            out_text("{\"done\":true}");
            end_line();
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
            out_flush();
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
    static const char *const fields[] = { "prompt", "stream", NULL };
    kjpick_paths paths;
    kjp_field f[2];
    kbuf scratch = { 0 };
    if (kjpick_compile(&paths, fields) != 0)
        abort();
    size_t len;
    char *line;
    while ((line = read_line(&len))) {
        if (kjpick(line, len, &paths, f, &scratch) != 0 || f[0].type != KJP_STRING ||
            f[1].type != KJP_BOOLEAN) {
            out_text("{\"error\":\"invalid request: need prompt (string) and stream (bool)\"}");
            end_line();
        } else {
            serve_daemon_request(f[0].str, f[0].len, (int)f[1].integer, model);
        }
        free(line);
    }
    kbuf_free(&scratch);
    sim_log("event=exit status=0");
    return 0;
}

/* ---- acp: the Agent Client Protocol ------------------------------------ */

/* What a message is read for (one pass of the field picker). The prompt's
 * text is that of its one text block; a prompt of several blocks is joined
 * from jansson's tree of them. */
enum {
    M_ID,
    M_METHOD,
    M_SESSION,
    M_CWD,
    M_MCP,
    M_MODEL,
    M_PROMPT,
    M_TYPE0,
    M_TEXT0,
    M_BLOCK1,
    M_OPTION,
    M_ERROR,
    M_CODE,
    M_COUNT
};
static const char *const message_fields[M_COUNT + 1] = {
    [M_ID] = "id",
    [M_METHOD] = "method",
    [M_SESSION] = "params.sessionId",
    [M_CWD] = "params.cwd",
    [M_MCP] = "params.mcpServers",
    [M_MODEL] = "params.modelId",
    [M_PROMPT] = "params.prompt",
    [M_TYPE0] = "params.prompt.0.type",
    [M_TEXT0] = "params.prompt.0.text",
    [M_BLOCK1] = "params.prompt.1",
    [M_OPTION] = "result.outcome.optionId",
    [M_ERROR] = "error",
    [M_CODE] = "error.code",
};
static kjpick_paths message_paths;

/* One message from the client, with what was picked from it (not JSON, or
 * not an object: nothing, and it is ignored). */
typedef struct message {
    char *line;
    kbuf scratch;
    kjp_field f[M_COUNT];
} message;

static message *read_message(void)
{
    size_t len;
    char *line = read_line(&len);
    if (!line)
        return NULL;
    message *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->line = line;
    if (kjpick(line, len, &message_paths, m->f, &m->scratch) != 0)
        memset(m->f, 0, sizeof m->f);
    return m;
}

static void message_free(message *m)
{
    if (!m)
        return;
    free(m->line);
    kbuf_free(&m->scratch);
    free(m);
}

/* Messages read while a turn waits for something else: seen again by the
 * main loop once the turn is over. */
static message **backlog;
static size_t nbacklog;

static void backlog_push(message *m)
{
    backlog = realloc(backlog, (nbacklog + 1) * sizeof *backlog);
    if (!backlog)
        abort();
    backlog[nbacklog++] = m;
}

/* A field as a C string in buf ("" when it is not a string). */
static const char *field_text(const kjp_field *f, char *buf, size_t n)
{
    if (f->type == KJP_STRING)
        snprintf(buf, n, "%.*s", (int)(f->len < n ? f->len : n), f->str);
    else
        buf[0] = '\0';
    return buf;
}

/* ---- writing: the messages sent on every turn are written by hand; the
 * rare ones are jansson's ---- */

static void rpc_send(json_t *msg)
{
    json_object_set_new(msg, "jsonrpc", json_string("2.0"));
    emit_json(msg);
}

/* The start of a response to m, up to the value of "result" or "error". */
static void respond(const message *m, const char *member)
{
    out_text("{\"jsonrpc\":\"2.0\",\"id\":");
    out_put(m->f[M_ID].raw, m->f[M_ID].raw_len);
    out_text(member);
}

static void rpc_result(const message *m, const char *result)
{
    respond(m, ",\"result\":");
    out_text(result);
    out_text("}");
    end_line();
}

static void rpc_error(const message *m, int code, const char *text)
{
    char head[64];
    snprintf(head, sizeof head, ",\"error\":{\"code\":%d,\"message\":", code);
    respond(m, head);
    out_string(text, strlen(text));
    out_text("}}");
    end_line();
}

static void update_head(const char *sid)
{
    out_text("{\"jsonrpc\":\"2.0\",\"method\":\"session/update\",\"params\":{\"sessionId\":");
    out_string(sid, strlen(sid));
    out_text(",\"update\":");
}

static void acp_update(const char *sid, json_t *update)
{
    char *txt = json_dumps(update, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(update);
    if (!txt)
        abort();
    update_head(sid);
    out_text(txt);
    out_text("}}");
    end_line();
    free(txt);
}

static void acp_chunk(const char *sid, const char *text, size_t n)
{
    update_head(sid);
    out_text("{\"sessionUpdate\":\"agent_message_chunk\",\"content\":{\"type\":\"text\",\"text\":");
    out_string(text, n);
    out_text("}}}}");
    end_line();
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
static struct session *find_session(const kjp_field *f)
{
    static const char prefix[] = "sim-session-";
    char id[32];
    if (f->type != KJP_STRING || f->len >= sizeof id)
        return NULL;
    field_text(f, id, sizeof id);
    if (strncmp(id, prefix, sizeof prefix - 1) != 0)
        return NULL;
    char *end;
    unsigned long n = strtoul(id + sizeof prefix - 1, &end, 10);
    if (*end || n == 0 || n > nsessions || strcmp(sessions[n - 1].id, id) != 0)
        return NULL;
    return &sessions[n - 1];
}

/* Is there a line to read now (without blocking)? */
static int readable(void)
{
    struct pollfd p = { .fd = 0, .events = POLLIN };
    return read_buffered() || poll(&p, 1, 0) > 0;
}

static int is_cancel(const message *m, const char *sid)
{
    return kjp_is(&m->f[M_METHOD], "session/cancel") && kjp_is(&m->f[M_SESSION], sid);
}

/* Sends a request to the client and waits for its answer: the response
 * (result or error), or NULL at EOF. A session/cancel meanwhile sets
 * *cancelled. */
static message *ask(const char *method, json_t *params, const char *sid, int *cancelled)
{
    static long next;
    char id[32];
    snprintf(id, sizeof id, "sim-%ld", next++);
    rpc_send(json_pack("{s:s, s:s, s:o}", "id", id, "method", method, "params", params));
    message *m;
    while ((m = read_message())) {
        if (kjp_is(&m->f[M_ID], id) && m->f[M_METHOD].type == KJP_ABSENT)
            return m;
        if (is_cancel(m, sid)) {
            *cancelled = 1;
            message_free(m);
        } else {
            backlog_push(m);
        }
    }
    return NULL;
}

/* Between chunks: a session/cancel for this turn stops it (unless told to
 * ignore cancels); anything else waits in the backlog. */
static int cancel_arrived(const char *sid)
{
    int cancelled = 0;
    while (readable()) {
        message *m = read_message();
        if (!m)
            break;
        if (is_cancel(m, sid)) {
            cancelled = 1;
            message_free(m);
        } else {
            backlog_push(m);
        }
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
    message *r = ask("session/request_permission",
                     json_pack("{s:s, s:{s:s, s:s}, s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}", "sessionId", sid,
                               "toolCall", "toolCallId", "sim-1", "title", "Editing kiro-sim.conf", "options",
                               "kind", "allow_once", "name", "Allow", "optionId", "sim-allow", "kind",
                               "reject_once", "name", "Skip", "optionId", "sim-reject"),
                     sid, cancelled);
    char option[64];
    sim_log("event=permission outcome=%s", r && r->f[M_OPTION].type == KJP_STRING
                                               ? field_text(&r->f[M_OPTION], option, sizeof option)
                                               : "cancelled");
    message_free(r);
}

static void serve_acp_prompt(const message *m, struct session *ses, const char *prompt, size_t len,
                             const char *model)
{
    const char *sid = ses->id;
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
        rpc_error(m, -32603, "simulated backend failure");
        return;
    }
    int cancelled = 0;
    if (acp_knobs.ask) {
        message *r = ask("_kiro-sim/ask", json_object(), sid, &cancelled);
        sim_log("event=asked answer=%s code=%lld",
                !r                                 ? "none"
                : r->f[M_ERROR].type != KJP_ABSENT ? "error"
                                                   : "result",
                r ? r->f[M_CODE].integer : 0LL);
        message_free(r);
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
        sleep_ms(env_long("KIRO_SIM_ACP_TOOL_MS", 0)); /* the tool at work */
        acp_update(sid, json_pack("{s:s, s:s, s:s}", "sessionUpdate", "tool_call_update", "toolCallId",
                                  "sim-2", "status", "completed"));
    }
    if (fault_on("overlong", 1)) {
        size_t n = (size_t)env_long("KIRO_SIM_OVERLONG_BYTES", 17L << 20);
        char *text = malloc(n + 1);
        memset(text, 'x', n);
        acp_chunk(sid, text, n);
        free(text);
        rpc_result(m, "{\"stopReason\":\"end_turn\"}");
        return;
    }
    if (fault_on("wrong-type", 1)) {
        update_head(sid);
        out_text(
            "{\"sessionUpdate\":\"agent_message_chunk\",\"content\":{\"type\":\"text\",\"text\":123}}}}");
        end_line();
        rpc_result(m, "{\"stopReason\":\"end_turn\"}");
        return;
    }
    size_t rl;
    char *reply = reply_for(prompt, len, ses->model[0] ? ses->model : model, &rl);
    size_t cuts[64];
    size_t k = split(reply, rl, cuts, 64);
    for (size_t i = 0; i < k && !(cancelled && !acp_knobs.ignore_cancel); i++) {
        size_t end = i + 1 < k ? cuts[i + 1] : rl;
        /* Between chunks a while apart, a cancel is looked for (a stream
         * with no delay is over before one could matter). */
        if (i > 0 && chunk_delay_ms > 0) {
            sleep_ms(chunk_delay_ms);
            if (cancel_arrived(sid)) {
                cancelled = 1;
                break;
            }
        }
        /* At the gate (what came before it out), a cancel still gets through. */
        if (i + 1 == k && gate_path)
            out_flush();
        while (i + 1 == k && gate_path && !exists(gate_path) && !cancelled) {
            cancelled = cancel_arrived(sid);
            sleep_ms(5);
        }
        if (cancelled)
            break;
        acp_chunk(sid, reply + cuts[i], end - cuts[i]);
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
    respond(m, ",\"result\":{\"stopReason\":");
    stop = cancelled ? "cancelled" : stop && *stop ? stop : "end_turn";
    out_string(stop, strlen(stop));
    out_text("}}");
    end_line();
}

/* The prompt's text: its one text block's, or its text blocks' joined (a
 * malloc'd string, *allocated set), or NULL when it is not an array. */
static const char *prompt_text(const message *m, size_t *len, char **allocated)
{
    const kjp_field *f = m->f;
    *allocated = NULL;
    if (f[M_PROMPT].type != KJP_ARRAY)
        return NULL;
    if (f[M_BLOCK1].type == KJP_ABSENT && f[M_TEXT0].type == KJP_STRING && kjp_is(&f[M_TYPE0], "text")) {
        *len = f[M_TEXT0].len;
        return f[M_TEXT0].str;
    }
    json_t *blocks = json_loadb(f[M_PROMPT].raw, f[M_PROMPT].raw_len, JSON_ALLOW_NUL, NULL);
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
    json_decref(blocks);
    out[*len] = '\0';
    return *allocated = out;
}

static void acp_message(const message *m, const char *model)
{
    const kjp_field *f = m->f;
    if (f[M_METHOD].type != KJP_STRING || f[M_ID].type == KJP_ABSENT || f[M_ID].type == KJP_NULL)
        return; /* a notification (a stray cancel), a response, or not JSON-RPC */
    if (kjp_is(&f[M_METHOD], "initialize")) {
        json_t *res = json_pack("{s:i, s:{s:b}, s:{s:s, s:s}}", "protocolVersion", 1, "agentCapabilities",
                                "loadSession", 0, "agentInfo", "name", "kiro-sim", "version", KIRO_VERSION);
        if (fault_on("auth", 0))
            json_object_set_new(res, "authMethods",
                                json_pack("[{s:s, s:s}]", "id", "sim-key", "name", "A key in KIRO_SIM_KEY"));
        char *txt = json_dumps(res, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(res);
        rpc_result(m, txt);
        free(txt);
    } else if (kjp_is(&f[M_METHOD], "session/new")) {
        if (f[M_CWD].type != KJP_STRING || f[M_CWD].len == 0 || f[M_CWD].str[0] != '/' ||
            f[M_MCP].type != KJP_ARRAY) {
            rpc_error(m, -32602, "Invalid params: cwd (absolute) and mcpServers are required");
        } else if (fault_on("auth", 0)) {
            rpc_error(m, -32000, "Simulated agent needs credentials");
        } else {
            sessions = realloc(sessions, (nsessions + 1) * sizeof *sessions);
            struct session *s = &sessions[nsessions];
            snprintf(s->id, sizeof s->id, "sim-session-%zu", ++nsessions);
            s->turns = 0;
            s->model[0] = '\0';
            respond(m, ",\"result\":{\"sessionId\":");
            out_string(s->id, strlen(s->id));
            out_text(",\"models\":{\"availableModels\":[{\"modelId\":\"sim-fast\",\"name\":\"Fast\"},"
                     "{\"modelId\":\"sim-smart\",\"name\":\"Smart\"}],\"currentModelId\":\"sim-fast\"}}}");
            end_line();
        }
    } else if (kjp_is(&f[M_METHOD], "session/prompt")) {
        struct session *s = find_session(&f[M_SESSION]);
        size_t len;
        char *allocated;
        const char *text = prompt_text(m, &len, &allocated);
        if (!s)
            rpc_error(m, -32603, "Internal error: session not found");
        else if (!text)
            rpc_error(m, -32602, "Invalid params: prompt must be an array of content blocks");
        else
            serve_acp_prompt(m, s, text, len, model);
        free(allocated);
    } else if (kjp_is(&f[M_METHOD], "session/set_model") && !acp_knobs.no_set_model) {
        struct session *s = find_session(&f[M_SESSION]);
        if (!s || !(kjp_is(&f[M_MODEL], "sim-fast") || kjp_is(&f[M_MODEL], "sim-smart"))) {
            rpc_error(m, -32602, "Invalid params: unknown session or model");
        } else {
            field_text(&f[M_MODEL], s->model, sizeof s->model);
            sim_log("event=set_model session=%s model=%s", s->id, s->model);
            rpc_result(m, "{}");
        }
    } else {
        rpc_error(m, -32601, "Method not found");
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
    if (kjpick_compile(&message_paths, message_fields) != 0)
        abort();
    for (;;) {
        message *m;
        if (nbacklog) {
            m = backlog[0];
            memmove(backlog, backlog + 1, --nbacklog * sizeof *backlog);
        } else if (!(m = read_message())) {
            break;
        }
        acp_message(m, model);
        message_free(m);
    }
    free(backlog);
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
