/* The Agent Client Protocol (SPEC 2.3, ../shared/ACP.md): JSON-RPC 2.0, one
 * object per line, both sides sending requests with ids of their own.
 *
 * Per agent process: `initialize` once, when it starts (so a warm agent has
 * paid its start-up before the first request). Per request (a turn): a
 * session of its own (every call is independent), then `session/prompt`
 * with one text block; the session's `agent_message_chunk` text is the
 * reply, and the `session/prompt` response ends it. Turns are served one at
 * a time, in the order they came: the daemon's reply order holds.
 *
 * A request that names a conversation (opts.session) goes on in that
 * conversation's session, made by its first turn; the pool sends every turn
 * of a conversation to the agent that holds it, and tells the protocol to
 * forget one that is over.
 *
 * The session for the next turn is made ahead (a spare: after initialize,
 * and as soon as a turn takes the last one), so a call costs the agent one
 * round trip, not two. A spare that failed is not trusted later: the turn
 * that would have used it asks for a session of its own, and gets the
 * agent's current answer (an `auth` error stays quick, and goes once the
 * user has logged in).
 *
 * Every request the agent sends is answered, since some agents stall until
 * they are: a permission request by the caller when it decides (kiro's
 * `permission` hook; answered `cancelled` if the turn ends or is cancelled
 * first), else at once with the first reject option; anything else
 * (fs/..., terminal/..., vendor `_...` methods) gets -32601 at once. Unknown
 * notifications and update kinds are ignored. */
#include "proto.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "core.h"
#include "jpick.h"
#include "jsonstr.h"
#include "log.h"
#include "request.h"
#include "version.h"

#define ACP_PROTOCOL_VERSION 1
#define ACP_AUTH_REQUIRED -32000
#define ACP_METHOD_NOT_FOUND -32601
#define ACP_QUEUE (KIRO_MAX_PIPELINE_DEPTH + 1)
#define ACP_QUESTIONS 8 /* permission requests awaiting the caller at once */

/* What a line from the agent is read for: every line is one pass of the
 * field picker (an update or a turn's end builds no tree); the rare ones
 * (an agent's request, initialize's result, a model list) are parsed again
 * by jansson, whole or from one field's text. */
enum {
    F_ID,
    F_METHOD,
    F_SESSION,
    F_KIND,
    F_TYPE,
    F_TEXT,
    F_UPDATE,
    F_RESULT,
    F_STOP,
    F_NEW_SESSION,
    F_ERROR,
    F_CODE,
    F_MESSAGE,
    F_COUNT
};
static const char *const acp_fields[F_COUNT + 1] = {
    [F_ID] = "id",
    [F_METHOD] = "method",
    [F_SESSION] = "params.sessionId",
    [F_KIND] = "params.update.sessionUpdate",
    [F_TYPE] = "params.update.content.type",
    [F_TEXT] = "params.update.content.text",
    [F_UPDATE] = "params.update",
    [F_RESULT] = "result",
    [F_STOP] = "result.stopReason",
    [F_NEW_SESSION] = "result.sessionId",
    [F_ERROR] = "error",
    [F_CODE] = "error.code",
    [F_MESSAGE] = "error.message",
};

typedef struct acp_turn {
    char *prompt; /* until session/prompt carries it */
    size_t len;
    int abandoned;
    char *key; /* its conversation, or NULL */
} acp_turn;

typedef struct acp {
    json_int_t next_id;
    json_int_t init_id, new_id, prompt_id; /* requests in flight; -1: none */
    json_int_t model_id;                   /* session/set_model in flight for `pending` */
    char *model;                           /* set in every session, or NULL */
    char *pending;                         /* a new session, until its model is set */
    int initialized;
    int spare_failed; /* the last session/new failed with no turn waiting */
    char *spare;      /* a session made ahead, for the next turn */
    char *session;    /* the running turn's session */
    int borrowed;     /* ...which a conversation owns (conv) */
    struct {
        char *key, *sid;
    } * conv; /* conversations: their keys and sessions */
    int nconv;
    char *auth_methods;    /* from initialize, for an auth error's message */
    acp_turn q[ACP_QUEUE]; /* the head is the turn being served */
    int head, count;
    struct {
        int token;  /* 0: free */
        json_t *id; /* the agent's request id */
    } asked[ACP_QUESTIONS];
    int next_token;
    char *cwd;           /* every session's: the agent's own, where it started */
    kjpick_paths fields; /* acp_fields, compiled */
    kbuf scratch;        /* the picker's decoded strings */
} acp;

static void *acp_new(const char *model)
{
    acp *a = kcalloc(1, sizeof *a);
    a->init_id = a->new_id = a->prompt_id = a->model_id = -1;
    a->model = model ? kstrdup(model) : NULL;
    char cwd[4096];
    size_t esc;
    if (!getcwd(cwd, sizeof cwd)) {
        strcpy(cwd, "/");
    } else if (kjstr_measure(cwd, strlen(cwd), &esc, NULL) != 0) {
        klog(KLOG_WARN, "kiro.provider",
             "the working directory is not UTF-8: the agent's sessions are given /");
        strcpy(cwd, "/");
    }
    a->cwd = kstrdup(cwd);
    if (kjpick_compile(&a->fields, acp_fields) != 0)
        abort(); /* a list that does not fit is a mistake in this file */
    return a;
}

static void acp_free(void *state)
{
    acp *a = state;
    for (int i = 0; i < a->count; i++) {
        free(a->q[(a->head + i) % ACP_QUEUE].prompt);
        free(a->q[(a->head + i) % ACP_QUEUE].key);
    }
    if (!a->borrowed)
        free(a->session);
    for (int i = 0; i < a->nconv; i++) {
        free(a->conv[i].key);
        free(a->conv[i].sid);
    }
    free(a->conv);
    free(a->spare);
    free(a->auth_methods);
    free(a->model);
    free(a->pending);
    for (int i = 0; i < ACP_QUESTIONS; i++)
        json_decref(a->asked[i].id);
    kbuf_free(&a->scratch);
    free(a->cwd);
    free(a);
}

/* v (consumed) as compact JSON appended to out, then tail. */
static void append_json(kbuf *out, json_t *v, const char *tail)
{
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!text)
        abort(); /* only an allocation failure can make jansson refuse */
    kbuf_append(out, text, strlen(text));
    kbuf_append(out, tail, strlen(tail));
    free(text);
}

/* One JSON-RPC message (consumed), as a line appended to out. */
static void put(kbuf *out, json_t *msg)
{
    json_object_set_new(msg, "jsonrpc", json_string("2.0"));
    append_json(out, msg, "\n");
}

/* The head of every request of ours, up to its params' value; its id
 * returned. (Sent for every call: no printf.) */
static json_int_t put_request(acp *a, kbuf *out, const char *method)
{
    json_int_t id = a->next_id++;
    char digits[24];
    int n = 0;
    unsigned long long v = (unsigned long long)id; /* ids count up from 0 */
    do
        digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < (int)sizeof digits);
    kbuf_append(out, "{\"jsonrpc\":\"2.0\",\"id\":", 22);
    kbuf_append(out, digits + sizeof digits - n, (size_t)n);
    kbuf_append(out, ",\"method\":\"", 11);
    kbuf_append(out, method, strlen(method));
    kbuf_append(out, "\",\"params\":", 11);
    return id;
}

/* A request of ours with params made by jansson (consumed); its id. */
static json_int_t request(acp *a, kbuf *out, const char *method, json_t *params)
{
    json_int_t id = put_request(a, out, method);
    append_json(out, params, "}\n");
    return id;
}

static void acp_start(void *state, kbuf *out)
{
    acp *a = state;
    a->init_id = request(a, out, "initialize",
                         json_pack("{s:i, s:{s:{s:b, s:b}, s:b}, s:{s:s, s:s}}", "protocolVersion",
                                   ACP_PROTOCOL_VERSION, "clientCapabilities", "fs", "readTextFile", 0,
                                   "writeTextFile", 0, "terminal", 0, "clientInfo", "name", "kiro-rt",
                                   "version", KIRO_VERSION));
}

static acp_turn *head(acp *a)
{
    return a->count ? &a->q[a->head] : NULL;
}

/* The answer to a permission request: the option chosen, or cancelled. */
static void permission_answer(kbuf *out, json_t *id, const char *option)
{
    json_t *outcome = option ? json_pack("{s:s, s:s}", "outcome", "selected", "optionId", option)
                             : json_pack("{s:s}", "outcome", "cancelled");
    put(out, json_pack("{s:O, s:{s:o}}", "id", id, "result", "outcome", outcome));
}

/* Every question the caller has not answered: cancelled (the turn ended,
 * or was cancelled: ACP wants them all answered then). */
static void cancel_questions(acp *a, kbuf *out)
{
    for (int i = 0; i < ACP_QUESTIONS; i++)
        if (a->asked[i].token) {
            permission_answer(out, a->asked[i].id, NULL);
            json_decref(a->asked[i].id);
            a->asked[i].token = 0;
            a->asked[i].id = NULL;
        }
}

static void acp_answer(void *state, int token, const char *option, kbuf *out)
{
    acp *a = state;
    for (int i = 0; i < ACP_QUESTIONS; i++)
        if (token && a->asked[i].token == token) {
            permission_answer(out, a->asked[i].id, option);
            json_decref(a->asked[i].id);
            a->asked[i].token = 0;
            a->asked[i].id = NULL;
        }
}

/* s as a JSON string, quotes and all, appended to out; -1 (nothing
 * written) if it is not UTF-8. */
static int put_string(kbuf *out, const char *s, size_t n)
{
    size_t esc;
    if (kjstr_measure(s, n, &esc, NULL) != 0)
        return -1;
    kbuf_reserve(out, esc + 2);
    out->data[out->len++] = '"';
    out->len = (size_t)(kjstr_write(out->data + out->len, s, n) - out->data);
    out->data[out->len++] = '"';
    return 0;
}

/* Asks for a session (for the next turn) unless one is there or coming.
 * Written by hand, like session/prompt: both are sent for every call. Its
 * cwd is the one the agent process was started in. */
static void want_session(acp *a, kbuf *out)
{
    if (!a->initialized || a->spare || a->new_id >= 0 || a->model_id >= 0)
        return;
    a->new_id = put_request(a, out, "session/new");
    kbuf_append(out, "{\"cwd\":", 7);
    if (put_string(out, a->cwd, strlen(a->cwd)) != 0)
        abort(); /* checked by acp_new */
    kbuf_append(out, ",\"mcpServers\":[]}}\n", 19);
}

/* session/prompt, its text written straight from the turn's prompt (which
 * goes, once carried). */
static void send_prompt(acp *a, acp_turn *t, kbuf *out)
{
    static const char mid[] = ",\"prompt\":[{\"type\":\"text\",\"text\":", tail[] = "}]}}\n";
    a->prompt_id = put_request(a, out, "session/prompt");
    kbuf_append(out, "{\"sessionId\":", 13);
    if (put_string(out, a->session, strlen(a->session)) != 0)
        abort(); /* the agent's session id, checked when it came */
    kbuf_append(out, mid, sizeof mid - 1);
    if (put_string(out, t->prompt, t->len) != 0)
        abort(); /* checked by acp_encode */
    kbuf_append(out, tail, sizeof tail - 1);
    free(t->prompt);
    t->prompt = NULL;
}

/* The session of conversation `key`, or NULL. */
static char *conv_find(acp *a, const char *key)
{
    for (int i = 0; i < a->nconv; i++)
        if (strcmp(a->conv[i].key, key) == 0)
            return a->conv[i].sid;
    return NULL;
}

/* The conversation `key` holds session sid (taken over) from now on. */
static void conv_add(acp *a, const char *key, char *sid)
{
    a->conv = krealloc(a->conv, (size_t)(a->nconv + 1) * sizeof *a->conv);
    a->conv[a->nconv].key = kstrdup(key);
    a->conv[a->nconv].sid = sid;
    a->nconv++;
}

static void acp_forget(void *state, const char *key)
{
    acp *a = state;
    /* Its turns still queued here go on as independent ones: they must not
     * bring the conversation back. */
    for (int i = 0; i < a->count; i++) {
        acp_turn *t = &a->q[(a->head + i) % ACP_QUEUE];
        if (t->key && strcmp(t->key, key) == 0 && !(i == 0 && a->prompt_id >= 0)) {
            free(t->key);
            t->key = NULL;
        }
    }
    for (int i = 0; i < a->nconv; i++) {
        if (strcmp(a->conv[i].key, key) != 0)
            continue;
        if (a->borrowed && a->session == a->conv[i].sid)
            a->borrowed = 0; /* the running turn keeps it until it ends */
        else
            free(a->conv[i].sid);
        free(a->conv[i].key);
        a->conv[i] = a->conv[--a->nconv];
        return;
    }
}

/* Starts the head turn when it can start (the agent initialized, a session
 * at hand), and asks for the session after it. An abandoned turn that never
 * reached the agent ends here, unsent (sink: only NULL when the head is a
 * new turn, which cannot be abandoned yet). */
static void advance(acp *a, kbuf *out, const kproto_sink *sink)
{
    while (a->initialized && a->count && a->prompt_id < 0) {
        acp_turn *t = head(a);
        if (t->abandoned) {
            free(t->prompt);
            free(t->key);
            a->head = (a->head + 1) % ACP_QUEUE;
            a->count--;
            sink->reply(sink->ud, "", 0, KPROTO_DONE_TRUE);
            continue;
        }
        char *sid = t->key ? conv_find(a, t->key) : NULL;
        if (sid) { /* a conversation goes on */
            a->session = sid;
            a->borrowed = 1;
            send_prompt(a, t, out);
            return;
        }
        if (a->spare_failed) { /* not trusted: this turn asks afresh */
            a->spare_failed = 0;
            want_session(a, out);
            return;
        }
        if (!a->spare) {
            want_session(a, out);
            return;
        }
        a->session = a->spare;
        a->spare = NULL;
        if (t->key) { /* a conversation starts: it keeps the session */
            conv_add(a, t->key, a->session);
            a->borrowed = 1;
        }
        send_prompt(a, t, out);
        want_session(a, out);
        return;
    }
}

/* advance(), its bytes sent through the sink. */
static void advance_now(acp *a, const kproto_sink *sink)
{
    kbuf out = { 0 };
    advance(a, &out, sink);
    if (out.len)
        sink->write(sink->ud, out.data, out.len);
    kbuf_free(&out);
}

/* The head turn is over: its reply ends (code NULL: done), and the next
 * one starts. */
static void end_turn(acp *a, const kproto_sink *sink, const char *code, const char *msg)
{
    acp_turn *t = head(a);
    kbuf out = { 0 };
    cancel_questions(a, &out);
    if (out.len)
        sink->write(sink->ud, out.data, out.len);
    kbuf_free(&out);
    free(t->prompt);
    free(t->key);
    if (!a->borrowed)
        free(a->session);
    a->session = NULL;
    a->borrowed = 0;
    a->head = (a->head + 1) % ACP_QUEUE;
    a->count--;
    if (code)
        sink->error(sink->ud, code, msg);
    else
        sink->reply(sink->ud, "", 0, KPROTO_DONE_TRUE);
    advance_now(a, sink);
}

static int acp_encode(void *state, const kproto_req *q, kbuf *out, const char **err)
{
    acp *a = state;
    size_t esc, len = q->len;
    const char *prompt = q->prompt, *session = q->session;
    /* An agent always streams (the daemon gathers a plain reply), and takes
     * the user's text as it is: no prompt form around it. */
    if (kjstr_measure(prompt, len, &esc, NULL) != 0) {
        *err = "prompt is not valid UTF-8";
        return -1;
    }
    if (a->count == ACP_QUEUE) {
        *err = "too many prompts queued for one agent";
        return -1;
    }
    acp_turn *t = &a->q[(a->head + a->count) % ACP_QUEUE];
    *t = (acp_turn){ kmalloc(len ? len : 1), len, 0, session ? kstrdup(session) : NULL };
    memcpy(t->prompt, prompt, len);
    a->count++;
    if (a->count == 1)
        advance(a, out, NULL);
    return 0;
}

static int acp_abandon(void *state, int pos, kbuf *out)
{
    acp *a = state;
    if (pos < 0 || pos >= a->count)
        return 0;
    a->q[(a->head + pos) % ACP_QUEUE].abandoned = 1;
    /* The turn on the agent is asked to stop, and every question it asked
     * is answered `cancelled`; it answers the turn `cancelled`. */
    if (pos == 0 && a->prompt_id >= 0 && a->session) {
        put(out, json_pack("{s:s, s:{s:s}}", "method", "session/cancel", "params", "sessionId", a->session));
        cancel_questions(a, out);
    }
    /* The head's end still has to come from the agent; a turn behind it
     * never reached it, and ends here, unsent, when its turn comes. */
    return pos == 0;
}

/* "message (auth methods: a, b)" for an agent that wants credentials. */
static void auth_error(acp *a, const kproto_sink *sink, const char *msg)
{
    char text[1024];
    if (a->auth_methods)
        snprintf(text, sizeof text, "%s (auth methods: %s)", msg, a->auth_methods);
    else
        snprintf(text, sizeof text, "%s", msg);
    end_turn(a, sink, KERR_AUTH, text);
}

static void remember_auth_methods(acp *a, json_t *result)
{
    json_t *methods = json_object_get(result, "authMethods");
    size_t i;
    json_t *m;
    kbuf names = { 0 };
    json_array_foreach(methods, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (!id)
            continue;
        if (names.len)
            kbuf_append(&names, ", ", 2);
        kbuf_append(&names, id, strlen(id));
    }
    if (names.len) {
        kbuf_append(&names, "", 1);
        free(a->auth_methods);
        a->auth_methods = names.data;
    }
}

/* Whether session/new's result lets a session take model m: yes when it
 * lists no models (the agent is asked anyway), or lists m. Else 0, the
 * models it lists written to buf. */
static int model_offered(const char *m, json_t *result, char *buf, size_t n)
{
    json_t *list = json_object_get(json_object_get(result, "models"), "availableModels");
    size_t i, used = 0;
    json_t *x;
    if (!json_is_array(list) || json_array_size(list) == 0)
        return 1;
    buf[0] = '\0';
    json_array_foreach(list, i, x)
    {
        const char *id = json_string_value(json_object_get(x, "modelId"));
        if (!id)
            continue;
        if (strcmp(id, m) == 0)
            return 1;
        int w = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", id);
        if (w > 0 && (size_t)w < n - used)
            used += (size_t)w;
    }
    return 0;
}

/* A field's raw JSON text, parsed by jansson (for the rare cases that need
 * more than the picker took), or NULL. */
static json_t *tree(const kjp_field *f)
{
    return f->type == KJP_ABSENT ? NULL
                                 : json_loadb(f->raw, f->raw_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
}

/* A length for "%.*s": a field's text, as much as a message can hold. */
static int clip(size_t n)
{
    return n > 4096 ? 4096 : (int)n;
}

/* An error response's "message" (or its JSON). */
static const char *error_text(const kjp_field *f, char *buf, size_t n)
{
    if (f[F_MESSAGE].type == KJP_STRING)
        snprintf(buf, n, "%.*s", clip(f[F_MESSAGE].len), f[F_MESSAGE].str);
    else
        snprintf(buf, n, "%.*s", clip(f[F_ERROR].raw_len), f[F_ERROR].raw);
    return buf;
}

/* A string field as a C string (malloc'd), or NULL when it is not one or
 * holds a NUL. */
static char *c_string(const kjp_field *f)
{
    if (f->type != KJP_STRING || memchr(f->str, '\0', f->len))
        return NULL;
    return kstrndup(f->str, f->len);
}

static void on_response(acp *a, json_int_t id, const kjp_field *f, const char *line, size_t len,
                        const kproto_sink *sink)
{
    int err = f[F_ERROR].type != KJP_ABSENT && f[F_ERROR].type != KJP_NULL;
    char buf[512];
    if (id < 0) {
        sink->violation(sink->ud, "a response to no request of ours", line, len);
    } else if (id == a->init_id) {
        a->init_id = -1;
        if (f[F_RESULT].type != KJP_OBJECT) {
            char why[256];
            snprintf(buf, sizeof buf, "initialize failed: %s",
                     err ? error_text(f, why, sizeof why) : "no result");
            sink->violation(sink->ud, buf, line, len);
            return;
        }
        a->initialized = 1;
        json_t *result = tree(&f[F_RESULT]);
        remember_auth_methods(a, result);
        json_decref(result);
        sink->alive(sink->ud);
        advance_now(a, sink);
        if (a->new_id < 0) { /* no turn yet: a session ready for the first */
            kbuf out = { 0 };
            want_session(a, &out);
            sink->write(sink->ud, out.data, out.len);
            kbuf_free(&out);
        }
    } else if (id == a->new_id) {
        a->new_id = -1;
        char *sid = err ? NULL : c_string(&f[F_NEW_SESSION]);
        /* A turn waits for it when one is queued and none runs. */
        int waited = a->count && a->prompt_id < 0 && !head(a)->abandoned;
        if (err && waited) {
            const char *text = error_text(f, buf, sizeof buf);
            if (f[F_CODE].type == KJP_INTEGER && f[F_CODE].integer == ACP_AUTH_REQUIRED)
                auth_error(a, sink, text);
            else
                end_turn(a, sink, KERR_BACKEND, text);
            return;
        }
        int offered = 1;
        if (sid && a->model) {
            json_t *result = tree(&f[F_RESULT]);
            offered = model_offered(a->model, result, buf, sizeof buf);
            json_decref(result);
        }
        if (!offered) {
            /* The agent lists its models, and not this one. */
            free(sid);
            char what[768];
            snprintf(what, sizeof what, "the agent cannot use model %s: it offers %s", a->model, buf);
            if (waited) {
                end_turn(a, sink, KERR_CONFIG, what);
                return;
            }
            a->spare_failed = 1;
        } else if (err) {
            a->spare_failed = 1;
            sink->alive(sink->ud);
        } else if (!sid) {
            sink->violation(sink->ud, "session/new answered without a sessionId", line, len);
            return;
        } else if (a->model) { /* the model first, then it is ready */
            a->pending = sid;
            kbuf out = { 0 };
            a->model_id = request(a, &out, "session/set_model",
                                  json_pack("{s:s, s:s}", "sessionId", sid, "modelId", a->model));
            sink->write(sink->ud, out.data, out.len);
            kbuf_free(&out);
            sink->alive(sink->ud);
            return;
        } else {
            a->spare = sid;
            sink->alive(sink->ud);
        }
        advance_now(a, sink);
    } else if (id == a->model_id) {
        a->model_id = -1;
        int waited = a->count && a->prompt_id < 0 && !head(a)->abandoned;
        if (err) {
            free(a->pending);
            a->pending = NULL;
            char what[768], why[512];
            snprintf(what, sizeof what, "the agent cannot use model %s: %s", a->model,
                     error_text(f, why, sizeof why));
            if (waited) {
                end_turn(a, sink, KERR_CONFIG, what);
                return;
            }
            a->spare_failed = 1;
        } else {
            a->spare = a->pending;
            a->pending = NULL;
        }
        sink->alive(sink->ud);
        advance_now(a, sink);
    } else if (id == a->prompt_id) {
        a->prompt_id = -1;
        if (err) {
            end_turn(a, sink, KERR_BACKEND, error_text(f, buf, sizeof buf));
            return;
        }
        const kjp_field *stop = &f[F_STOP];
        if (stop->type != KJP_STRING) {
            sink->violation(sink->ud, "session/prompt answered without a stopReason", line, len);
            return;
        }
        if (!kjp_is(stop, "end_turn") && !kjp_is(stop, "cancelled")) {
            /* refusal, max_tokens, ...: the reply is whole but not finished;
             * the caller sees why as an update of kiro's own kind. */
            klog(KLOG_INFO, "kiro.provider", "the agent ended its turn: %.*s", clip(stop->len), stop->str);
            kbuf why = { 0 };
            static const char head[] = "{\"sessionUpdate\":\"stop_reason\",\"stopReason\":";
            kbuf_append(&why, head, sizeof head - 1);
            kbuf_append(&why, stop->raw, stop->raw_len);
            kbuf_append(&why, "}", 1);
            sink->update(sink->ud, why.data, why.len);
            kbuf_free(&why);
        }
        end_turn(a, sink, NULL, NULL);
    } else { /* an answer to nothing asked: what else it says cannot be trusted */
        sink->violation(sink->ud, "a response to no request of ours", line, len);
    }
}

/* A request from the agent, answered at once. */
static void on_agent_request(acp *a, json_t *id, const char *method, json_t *params, const kproto_sink *sink)
{
    kbuf out = { 0 };
    int slot = -1;
    for (int i = 0; i < ACP_QUESTIONS && slot < 0; i++)
        if (!a->asked[i].token)
            slot = i;
    int permission = strcmp(method, "session/request_permission") == 0;
    /* Only a question about the running turn's session goes to its caller. */
    const char *sid = json_string_value(json_object_get(params, "sessionId"));
    int ours = a->session && sid && strcmp(sid, a->session) == 0;
    if (permission && ours && slot >= 0 && sink->asks(sink->ud)) {
        /* The caller decides: the question goes up, the answer comes back
         * through acp_answer. */
        if (++a->next_token <= 0)
            a->next_token = 1;
        a->asked[slot].token = a->next_token;
        a->asked[slot].id = json_incref(id);
        char *text = json_dumps(params, JSON_COMPACT);
        sink->ask(sink->ud, a->next_token, text ? text : "{}", text ? strlen(text) : 2);
        free(text);
        return;
    }
    if (permission) {
        /* No one to ask: the first option that rejects, else cancelled. */
        const char *choice = NULL;
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(params, "options"), i, o)
        {
            const char *kind = json_string_value(json_object_get(o, "kind"));
            if (kind && strncmp(kind, "reject", 6) == 0) {
                choice = json_string_value(json_object_get(o, "optionId"));
                break;
            }
        }
        permission_answer(&out, id, choice);
        json_t *tool = json_object_get(params, "toolCall");
        const char *title = json_string_value(json_object_get(tool, "title"));
        klog(KLOG_INFO, "kiro.provider", "permission %s: \"%s\" (%s)", choice ? "reject" : "cancelled",
             title ? title : "a tool call",
             !ours      ? "asked outside the running turn"
             : slot < 0 ? "too many questions at once"
                        : "no permission hook nor trust list");
    } else {
        put(&out, json_pack("{s:O, s:{s:i, s:s, s:{s:s}}}", "id", id, "error", "code", ACP_METHOD_NOT_FOUND,
                            "message", "Method not found", "data", "method", method));
    }
    sink->write(sink->ud, out.data, out.len);
    kbuf_free(&out);
    sink->alive(sink->ud);
}

/* A notification: a session/update of the running turn's session is news
 * for its caller (reply text, or anything else as its JSON); the rest is
 * ignored. */
static void on_notification(acp *a, const kjp_field *f, const char *line, size_t len, const kproto_sink *sink)
{
    const kjp_field *sid = &f[F_SESSION];
    size_t slen = a->session ? strlen(a->session) : 0;
    if (!kjp_is(&f[F_METHOD], "session/update") || f[F_KIND].type != KJP_STRING || !a->session ||
        sid->type != KJP_STRING || sid->len != slen || memcmp(sid->str, a->session, slen) != 0) {
        sink->alive(sink->ud); /* other notifications, other sessions: ignored */
        return;
    }
    if (!kjp_is(&f[F_KIND], "agent_message_chunk") || !kjp_is(&f[F_TYPE], "text")) {
        /* Not reply text (a tool call, a thought, a plan, an image): for
         * whoever wants to show it. */
        sink->update(sink->ud, f[F_UPDATE].raw, f[F_UPDATE].raw_len);
        return;
    }
    if (f[F_TEXT].type != KJP_STRING) {
        sink->violation(sink->ud, "an agent_message_chunk's \"text\" is not a string", line, len);
        return;
    }
    sink->reply(sink->ud, f[F_TEXT].str, f[F_TEXT].len, KPROTO_DONE_FALSE);
}

static void acp_decode(void *state, const char *line, size_t len, const kproto_sink *sink)
{
    acp *a = state;
    kjp_field f[F_COUNT];
    if (kjpick(line, len, &a->fields, f, &a->scratch) != 0) {
        sink->noise(sink->ud, line, len, "not a JSON object");
        return;
    }
    int method = f[F_METHOD].type == KJP_STRING;
    if (method && f[F_ID].type != KJP_ABSENT && f[F_ID].type != KJP_NULL) {
        /* A request: rare, and answered from jansson's tree. */
        json_t *msg = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
        const char *name = json_string_value(json_object_get(msg, "method"));
        if (!name) /* jansson refuses what the picker took (a lone high surrogate) */
            sink->noise(sink->ud, line, len, "not a JSON object");
        else
            on_agent_request(a, json_object_get(msg, "id"), name, json_object_get(msg, "params"), sink);
        json_decref(msg);
    } else if (method) {
        on_notification(a, f, line, len, sink);
    } else if (f[F_ID].type == KJP_INTEGER) {
        on_response(a, f[F_ID].integer, f, line, len, sink);
    } else {
        sink->noise(sink->ud, line, len, "neither a request, a notification nor a response of ours");
    }
}

const kproto_ops kproto_acp = {
    .name = "acp",
    .conversations = 1,
    .start = acp_start,
    .encode = acp_encode,
    .decode = acp_decode,
    .abandon = acp_abandon,
    .answer = acp_answer,
    .forget = acp_forget,
    .state_new = acp_new,
    .state_free = acp_free,
};
