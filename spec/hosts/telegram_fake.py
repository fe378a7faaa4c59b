#!/usr/bin/python3
"""A fake Telegram Bot API server for kiro-rt's bot specs (Python's standard
library only), enforcing the real API's error shapes and limits
(CHANNELS.md): flood control with retry_after (more than one send or edit a
second in a chat, or thirty a second in all), "message is not modified",
"message to edit not found", 4096 code points, empty text, 409 on a second
long poll, 401 for a wrong token.

Bot API: POST /bot<TOKEN>/<method> with a JSON body: getMe, getUpdates,
sendMessage, editMessageText, sendChatAction, sendMessageDraft.
Control (for the specs):
  POST /control/update {"chat_id":, "user_id":, "text":, "chat_type":}  a message to the bot
  POST /control/inject {"chat_id":, "retry_after":}  the next send or edit there gets a 429
  GET  /control/calls      every Bot API call: {"t": ms, "method":, "chat":, "text":, "status":},
                           and each update as it came (method "update")
  GET  /control/messages   every message the bot sent: {"id":, "chat":, "text":, "edits":}
Usage: telegram_fake.py PORTFILE TOKEN"""
import json
import sys
import threading
import time

import fakeserver

TOKEN = sys.argv[2]
lock = threading.Condition()
updates = []          # pending updates
next_update = 1
polls = 0             # the current long poll's number: a newer one ends an older one (409)
calls = []
messages = {}         # message id -> {"id", "chat", "text", "edits"}
next_message = 1
last_write = {}       # chat -> time of its last send or edit
blocked = {}          # chat -> time before which a call gets 429
inject = {}           # chat -> retry_after for its next send or edit
recent = []           # times of the last calls, for the global limit
START = time.monotonic()


def now_ms():
    return (time.monotonic() - START) * 1000


def length(text):
    return len(text)  # Python strings are code points


class Handler(fakeserver.Handler):
    def fail(self, code, desc, params=None):
        obj = {"ok": False, "error_code": code, "description": desc}
        headers = {}
        if params:
            obj["parameters"] = params
            if "retry_after" in params:
                headers["Retry-After"] = str(params["retry_after"])
        self.send_json(code, obj, headers)
        return code

    def ok(self, result):
        self.send_json(200, {"ok": True, "result": result})
        return 200

    def do_GET(self):
        with lock:
            if self.path == "/control/calls":
                return self.send_json(200, calls)
            if self.path == "/control/messages":
                return self.send_json(200, sorted(messages.values(), key=lambda m: m["id"]))
        self.send_json(404, {"ok": False})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.fail(400, "Bad Request: can't parse JSON")
        if self.path.startswith("/control/"):
            return self.control(self.path[len("/control/"):], body)
        parts = self.path.split("/")
        if len(parts) != 3 or not parts[1].startswith("bot"):
            return self.fail(404, "Not Found")
        if parts[1][3:] != TOKEN:
            return self.fail(401, "Unauthorized")
        method = parts[2]
        if method == "getUpdates":
            return self.get_updates(body)
        with lock:
            status = self.api(method, body)
            calls.append({"t": now_ms(), "method": method, "chat": body.get("chat_id"),
                          "text": body.get("text"), "status": status})

    def control(self, what, body):
        global next_update
        with lock:
            if what == "update":
                updates.append({"update_id": next_update, "message": {
                    "message_id": next_update, "date": int(time.time()), "text": body["text"],
                    "chat": {"id": body["chat_id"], "type": body.get("chat_type", "private")},
                    "from": {"id": body["user_id"], "is_bot": False, "first_name": "U"}}})
                calls.append({"t": now_ms(), "method": "update", "chat": body["chat_id"], "text": body["text"],
                              "status": 200})
                next_update += 1
                lock.notify_all()
            elif what == "inject":
                inject[body["chat_id"]] = body["retry_after"]
            return self.send_json(200, {"ok": True})

    def get_updates(self, body):
        global polls
        offset, timeout = body.get("offset"), min(int(body.get("timeout", 0)), 50)
        with lock:
            polls += 1
            mine = polls
            lock.notify_all()  # an older poll ends with 409
            if offset is not None:
                updates[:] = [u for u in updates if u["update_id"] >= offset]
            deadline = time.monotonic() + timeout
            while not updates and polls == mine and time.monotonic() < deadline:
                lock.wait(deadline - time.monotonic())
            if polls != mine:
                return self.fail(409, "Conflict: terminated by other getUpdates request; make sure that only "
                                      "one bot instance is running")
            return self.ok(list(updates[:100]))

    def api(self, method, body):
        global next_message
        chat = body.get("chat_id")
        t = now_ms()
        if method == "getMe":
            return self.ok({"id": 1, "is_bot": True, "first_name": "Kiro", "username": "kiro_test_bot"})
        if method == "sendChatAction":
            return self.ok(True)
        writes = method in ("sendMessage", "editMessageText")
        # Flood control: a chat held by a 429 stays held; writes at most one a
        # second per chat; thirty calls a second in all.
        recent[:] = [x for x in recent if t - x < 1000]
        if chat in blocked and t < blocked[chat]:
            return self.fail(429, "Too Many Requests: retry after %d" % ((blocked[chat] - t) // 1000 + 1),
                             {"retry_after": int((blocked[chat] - t) // 1000 + 1)})
        if writes and chat in inject:
            after = inject.pop(chat)
            blocked[chat] = t + after * 1000
            return self.fail(429, "Too Many Requests: retry after %d" % after, {"retry_after": after})
        if writes and chat in last_write and t - last_write[chat] < 950:
            blocked[chat] = t + 1000
            return self.fail(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        if len(recent) >= 30:
            return self.fail(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        recent.append(t)
        text = body.get("text")
        if method == "sendMessageDraft":
            if not isinstance(chat, int) or chat < 0:
                return self.fail(400, "Bad Request: drafts are available only in private chats")
            return self.ok(True)
        if not isinstance(text, str) or not text.strip():
            return self.fail(400, "Bad Request: text must be non-empty")
        if length(text.strip()) > 4096:
            return self.fail(400, "Bad Request: message is too long")
        text = text.strip()
        if method == "sendMessage":
            last_write[chat] = t
            m = {"id": next_message, "chat": chat, "text": text, "edits": 0}
            messages[next_message] = m
            next_message += 1
            return self.ok({"message_id": m["id"], "chat": {"id": chat}, "text": text})
        if method == "editMessageText":
            m = messages.get(body.get("message_id"))
            if not m or m["chat"] != chat:
                return self.fail(400, "Bad Request: message to edit not found")
            if m["text"] == text:
                return self.fail(400, "Bad Request: message is not modified: specified new message content and "
                                      "reply markup are exactly the same as a current content and reply markup "
                                      "of the message")
            last_write[chat] = t
            m["text"] = text
            m["edits"] += 1
            return self.ok({"message_id": m["id"], "chat": {"id": chat}, "text": text})
        return self.fail(404, "Not Found: method not found")


def main():
    fakeserver.serve(Handler, sys.argv[1])


if __name__ == "__main__":
    main()
