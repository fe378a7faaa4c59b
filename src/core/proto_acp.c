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
#include "jsonstr.h"
#include "log.h"
#include "request.h"
#include "version.h"

#define ACP_PROTOCOL_VERSION 1
#define ACP_AUTH_REQUIRED -32000
#define ACP_METHOD_NOT_FOUND -32601
#define ACP_QUEUE (KIRO_MAX_PIPELINE_DEPTH + 1)
#define ACP_QUESTIONS 8 /* permission requests awaiting the caller at once */

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
} acp;

static void *acp_new(const char *model)
{
    acp *a = kcalloc(1, sizeof *a);
    a->init_id = a->new_id = a->prompt_id = a->model_id = -1;
    a->model = model ? kstrdup(model) : NULL;
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
    free(a);
}

/* One JSON-RPC message (consumed), as a line appended to out. */
static void put(kbuf *out, json_t *msg)
{
    json_object_set_new(msg, "jsonrpc", json_string("2.0"));
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        abort(); /* only an allocation failure can make jansson refuse */
    kbuf_append(out, text, strlen(text));
    kbuf_append(out, "\n", 1);
    free(text);
}

static json_int_t request(acp *a, kbuf *out, const char *method, json_t *params)
{
    json_int_t id = a->next_id++;
    put(out, json_pack("{s:I, s:s, s:o}", "id", id, "method", method, "params", params));
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

/* Asks for a session (for the next turn) unless one is there or coming. */
static void want_session(acp *a, kbuf *out)
{
    if (!a->initialized || a->spare || a->new_id >= 0 || a->model_id >= 0)
        return;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "/");
    a->new_id = request(a, out, "session/new", json_pack("{s:s, s:[]}", "cwd", cwd, "mcpServers"));
}

/* session/prompt, its text written straight from the turn's prompt (which
 * goes, once carried). */
static void send_prompt(acp *a, acp_turn *t, kbuf *out)
{
    json_t *sid = json_string(a->session);
    char *sjs = sid ? json_dumps(sid, JSON_ENCODE_ANY) : NULL;
    json_decref(sid);
    size_t esc;
    if (!sjs || kjstr_measure(t->prompt, t->len, &esc, NULL) != 0)
        abort(); /* both were checked when they came in */
    a->prompt_id = a->next_id++;
    char headtxt[128];
    int hl =
        snprintf(headtxt, sizeof headtxt,
                 "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"session/prompt\",\"params\":{\"sessionId\":",
                 (long long)a->prompt_id);
    static const char mid[] = ",\"prompt\":[{\"type\":\"text\",\"text\":\"", tail[] = "\"}]}}\n";
    kbuf_reserve(out, (size_t)hl + strlen(sjs) + sizeof mid + esc + sizeof tail);
    kbuf_append(out, headtxt, (size_t)hl);
    kbuf_append(out, sjs, strlen(sjs));
    kbuf_append(out, mid, sizeof mid - 1);
    char *w = kjstr_write(out->data + out->len, t->prompt, t->len);
    out->len = (size_t)(w - out->data);
    kbuf_append(out, tail, sizeof tail - 1);
    free(sjs);
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

/* An error response's "message" (or its JSON). */
static const char *error_text(json_t *err, char *buf, size_t n)
{
    const char *m = json_string_value(json_object_get(err, "message"));
    if (m)
        return m;
    char *txt = json_dumps(err, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(buf, n, "%s", txt ? txt : "error");
    free(txt);
    return buf;
}

static void on_response(acp *a, json_int_t id, json_t *msg, const char *line, size_t len,
                        const kproto_sink *sink)
{
    json_t *result = json_object_get(msg, "result"), *err = json_object_get(msg, "error");
    char buf[512];
    if (id < 0) {
        sink->violation(sink->ud, "a response to no request of ours", line, len);
    } else if (id == a->init_id) {
        a->init_id = -1;
        if (!json_is_object(result)) {
            char why[256];
            snprintf(buf, sizeof buf, "initialize failed: %s",
                     err ? error_text(err, why, sizeof why) : "no result");
            sink->violation(sink->ud, buf, line, len);
            return;
        }
        a->initialized = 1;
        remember_auth_methods(a, result);
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
        const char *sid = json_string_value(json_object_get(result, "sessionId"));
        /* A turn waits for it when one is queued and none runs. */
        int waited = a->count && a->prompt_id < 0 && !head(a)->abandoned;
        if (err && waited) {
            json_t *code = json_object_get(err, "code");
            const char *text = error_text(err, buf, sizeof buf);
            if (json_is_integer(code) && json_integer_value(code) == ACP_AUTH_REQUIRED)
                auth_error(a, sink, text);
            else
                end_turn(a, sink, KERR_BACKEND, text);
            return;
        }
        if (!err && sid && a->model && !model_offered(a->model, result, buf, sizeof buf)) {
            /* The agent lists its models, and not this one. */
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
            a->pending = kstrdup(sid);
            kbuf out = { 0 };
            a->model_id = request(a, &out, "session/set_model",
                                  json_pack("{s:s, s:s}", "sessionId", sid, "modelId", a->model));
            sink->write(sink->ud, out.data, out.len);
            kbuf_free(&out);
            sink->alive(sink->ud);
            return;
        } else {
            a->spare = kstrdup(sid);
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
                     error_text(err, why, sizeof why));
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
            end_turn(a, sink, KERR_BACKEND, error_text(err, buf, sizeof buf));
            return;
        }
        const char *stop = json_string_value(json_object_get(result, "stopReason"));
        if (!stop) {
            sink->violation(sink->ud, "session/prompt answered without a stopReason", line, len);
            return;
        }
        if (strcmp(stop, "end_turn") != 0 && strcmp(stop, "cancelled") != 0) {
            /* refusal, max_tokens, ...: the reply is whole but not finished;
             * the caller sees why as an update of kiro's own kind. */
            klog(KLOG_INFO, "kiro.provider", "the agent ended its turn: %s", stop);
            char *why = NULL;
            json_t *u = json_pack("{s:s, s:s}", "sessionUpdate", "stop_reason", "stopReason", stop);
            if (u && (why = json_dumps(u, JSON_COMPACT)))
                sink->update(sink->ud, why, strlen(why));
            free(why);
            json_decref(u);
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
    } else {
        put(&out, json_pack("{s:O, s:{s:i, s:s, s:{s:s}}}", "id", id, "error", "code", ACP_METHOD_NOT_FOUND,
                            "message", "Method not found", "data", "method", method));
    }
    sink->write(sink->ud, out.data, out.len);
    kbuf_free(&out);
    sink->alive(sink->ud);
}

static void on_notification(acp *a, const char *method, json_t *params, const char *line, size_t len,
                            const kproto_sink *sink)
{
    json_t *update = json_object_get(params, "update");
    const char *kind = json_string_value(json_object_get(update, "sessionUpdate"));
    const char *sid = json_string_value(json_object_get(params, "sessionId"));
    if (strcmp(method, "session/update") != 0 || !kind || !a->session || !sid ||
        strcmp(sid, a->session) != 0) {
        sink->alive(sink->ud); /* other notifications, other sessions: ignored */
        return;
    }
    json_t *content = json_object_get(update, "content");
    const char *type = json_string_value(json_object_get(content, "type"));
    if (strcmp(kind, "agent_message_chunk") != 0 || !type || strcmp(type, "text") != 0) {
        /* Not reply text (a tool call, a thought, a plan, an image): for
         * whoever wants to show it. */
        char *text = json_dumps(update, JSON_COMPACT);
        if (text)
            sink->update(sink->ud, text, strlen(text));
        else
            sink->alive(sink->ud);
        free(text);
        return;
    }
    json_t *text = json_object_get(content, "text");
    if (!json_is_string(text)) {
        sink->violation(sink->ud, "an agent_message_chunk's \"text\" is not a string", line, len);
        return;
    }
    sink->reply(sink->ud, json_string_value(text), json_string_length(text), KPROTO_DONE_FALSE);
}

static void acp_decode(void *state, const char *line, size_t len, const kproto_sink *sink)
{
    acp *a = state;
    json_t *msg = json_loadb(line, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
    if (!json_is_object(msg)) {
        sink->noise(sink->ud, line, len, msg ? "not a JSON object" : "not JSON");
        json_decref(msg);
        return;
    }
    json_t *id = json_object_get(msg, "id");
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (method && id && !json_is_null(id))
        on_agent_request(a, id, method, json_object_get(msg, "params"), sink);
    else if (method)
        on_notification(a, method, json_object_get(msg, "params"), line, len, sink);
    else if (json_is_integer(id))
        on_response(a, json_integer_value(id), msg, line, len, sink);
    else
        sink->noise(sink->ud, line, len, "neither a request, a notification nor a response of ours");
    json_decref(msg);
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
