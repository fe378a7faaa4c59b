/* The daemon protocol of seed-spec section 4 (SPEC 2.1), on jansson. */
#include "proto.h"

#include <jansson.h>
#include <string.h>

#include "jsonstr.h"

static int jsonl_encode(void *state, const kproto_req *q, kbuf *out, const char **err)
{
    static const char head[] = "{\"prompt\":\"";
    const char *tail = q->stream ? "\",\"stream\":true}\n" : "\",\"stream\":false}\n";
    size_t pe, esc, se, tl = strlen(tail);
    (void)state;
    if (kjstr_measure(q->pre, q->pre_len, &pe, NULL) != 0 ||
        kjstr_measure(q->prompt, q->len, &esc, NULL) != 0 ||
        kjstr_measure(q->post, q->post_len, &se, NULL) != 0) {
        *err = "prompt is not valid UTF-8";
        return -1;
    }
    kbuf_reserve(out, sizeof head - 1 + pe + esc + se + tl);
    char *w = out->data + out->len;
    memcpy(w, head, sizeof head - 1);
    w = kjstr_write(w + sizeof head - 1, q->pre, q->pre_len);
    w = kjstr_write(w, q->prompt, q->len);
    w = kjstr_write(w, q->post, q->post_len);
    memcpy(w, tail, tl);
    out->len = (size_t)(w + tl - out->data);
    return 0;
}

static void jsonl_decode(void *state, const char *line, size_t len, const kproto_sink *sink)
{
    (void)state;
    json_error_t jerr;
    json_t *v = json_loadb(line, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!v) {
        sink->noise(sink->ud, line, len, "not JSON");
        return;
    }
    if (!json_is_object(v)) {
        sink->noise(sink->ud, line, len, "not a JSON object");
        json_decref(v);
        return;
    }
    json_t *e = json_object_get(v, "error");
    if (e && !json_is_null(e)) {
        if (json_is_string(e)) {
            sink->error(sink->ud, NULL, json_string_value(e));
        } else {
            json_t *m = json_is_object(e) ? json_object_get(e, "message") : NULL;
            if (json_is_string(m)) {
                sink->error(sink->ud, NULL, json_string_value(m));
            } else {
                char *txt = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
                sink->error(sink->ud, NULL, txt ? txt : "error");
                free(txt);
            }
        }
        json_decref(v);
        return;
    }
    json_t *c = json_object_get(v, "content");
    json_t *d = json_object_get(v, "done");
    if (c && json_is_null(c))
        c = NULL;
    if (d && json_is_null(d))
        d = NULL;
    if (c && !json_is_string(c))
        sink->violation(sink->ud, "\"content\" is not a string", line, len);
    else if (d && !json_is_boolean(d))
        sink->violation(sink->ud, "\"done\" is not a boolean", line, len);
    else if (c || d)
        sink->reply(sink->ud, c ? json_string_value(c) : "", c ? json_string_length(c) : 0,
                    d ? (json_is_true(d) ? KPROTO_DONE_TRUE : KPROTO_DONE_FALSE) : KPROTO_DONE_ABSENT);
    else
        sink->noise(sink->ud, line, len, "neither content, done nor error");
    json_decref(v);
}

const kproto_ops kproto_jsonl = {
    .name = "jsonl",
    .encode = jsonl_encode,
    .decode = jsonl_decode,
};

const kproto_ops *kproto_find(const char *name)
{
    if (strcmp(name, "jsonl") == 0)
        return &kproto_jsonl;
    if (strcmp(name, "acp") == 0)
        return &kproto_acp;
    return NULL;
}
