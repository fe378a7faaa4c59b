/* The daemon protocol of seed-spec section 4 (SPEC 2.1), on jansson. */
#include "proto.h"

#include <jansson.h>
#include <string.h>

static int dump_to_kbuf(const char *p, size_t n, void *ud)
{
    kbuf_append(ud, p, n);
    return 0;
}

static int jsonl_encode(void *state, const char *prompt, size_t len, int stream, kbuf *out,
                        const char **err)
{
    (void)state;
    json_t *s = json_stringn(prompt, len); /* validates UTF-8; NUL is fine */
    if (!s) {
        *err = "prompt is not valid UTF-8";
        return -1;
    }
    json_t *obj = json_object();
    json_object_set_new(obj, "prompt", s);
    json_object_set_new(obj, "stream", json_boolean(stream));
    int rc = json_dump_callback(obj, dump_to_kbuf, out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (rc != 0) {
        *err = "cannot encode request";
        return -1;
    }
    kbuf_append(out, "\n", 1);
    return 0;
}

static void jsonl_decode(void *state, const char *line, size_t len, const proto_sink *sink)
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
            sink->error(sink->ud, json_string_value(e));
        } else {
            json_t *m = json_is_object(e) ? json_object_get(e, "message") : NULL;
            if (json_is_string(m)) {
                sink->error(sink->ud, json_string_value(m));
            } else {
                char *txt = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
                sink->error(sink->ud, txt ? txt : "error");
                free(txt);
            }
        }
        json_decref(v);
        return;
    }
    json_t *c = json_object_get(v, "content");
    json_t *d = json_object_get(v, "done");
    int done = d ? (json_is_true(d) ? PROTO_DONE_TRUE : PROTO_DONE_FALSE) : PROTO_DONE_ABSENT;
    if (json_is_string(c))
        sink->reply(sink->ud, json_string_value(c), json_string_length(c), 1, done);
    else if (d)
        sink->reply(sink->ud, "", 0, 0, done);
    else
        sink->noise(sink->ud, line, len, "neither content, done nor error");
    json_decref(v);
}

const proto_ops proto_jsonl = {
    .name = "jsonl",
    .encode = jsonl_encode,
    .decode = jsonl_decode,
    .state_new = NULL,
    .state_free = NULL,
};

const proto_ops *proto_find(const char *name)
{
    if (strcmp(name, "jsonl") == 0)
        return &proto_jsonl;
    return NULL;
}
