#!/usr/bin/python3
"""A fake Discord API for kiro-rt's bot specs (Python's standard library
only, its WebSocket side too), enforcing the real API's error shapes and
limits (CHANNELS.md): gateway heartbeats (4009 after twice the interval),
IDENTIFY and RESUME (4004, 4005, 4003, 4001, 4002, op 9), 120 frames a
minute (4008), MESSAGE_CONTENT; REST buckets (5 per 5 s a route and channel)
and their headers, 50 requests a second in all, 2000 code points, empty
messages, 401. A client closing with 1000 or 1001 ends its session.

Gateway: GET /gateway with Upgrade: websocket (a query string is ignored);
READY's resume_gateway_url is GET /resume, the same gateway under another
path, so the specs see where a client resumed.
REST, with "Authorization: Bot TOKEN":
  POST  /api/v10/channels/<channel>/messages            {"content":}
  PATCH /api/v10/channels/<channel>/messages/<message>  {"content":}
  POST  /api/v10/channels/<channel>/typing              204
Control (for the specs):
  POST /control/message {"channel_id":, "author_id":, "content":, "guild_id":, "username":}
                        a MESSAGE_CREATE in the latest session: {"ok": true, "seq":}; 409 without one
  POST /control/inject {"channel_id":, "retry_after":}  the next create or edit there gets a 429,
                        and its creates and edits stay held that long
  POST /control/drop    cuts the gateway connections without a close frame (still resumable)
  POST /control/close {"code":}  closes them with that close code
  POST /control/mute   they stop acknowledging heartbeats (and go on otherwise)
  POST /control/op {"op": 7}      sends RECONNECT on them
  POST /control/op {"op": 9, "d":}  sends INVALID SESSION on them; with "d": false their
                        sessions end first (a RESUME of one gets op 9 again)
  GET  /control/calls   every event: {"t": ms, "kind": "rest", "method":, "route":, "channel":,
                        "message":, "content":, "status":}; {"t":, "kind": "gateway", "op":, "dir":,
                        "t_name":, "s":, "conn":}; {"t":, "kind": "gateway", "event": "connect" |
                        "disconnect" | "close" (with "code" and "dir"), "conn":} ("connect" with "path")
  GET  /control/messages  every message the bot created: {"id":, "channel":, "content":, "edits":}
  GET  /control/state   {"connections":, "open":, "identifies":, "resumes":, "sessions":, "r429":}
                        (identifies and resumes: those received, right or wrong)
Usage: discord_fake.py PORTFILE TOKEN [HEARTBEAT_MS]"""
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import struct
import sys
import threading
import time

import fakeserver

TOKEN = sys.argv[2]
HEARTBEAT_MS = int(sys.argv[3]) if len(sys.argv) > 3 else 41250
LIMITS = {"create": (5, 5.0), "edit": (5, 5.0), "typing": (5, 5.0), "other": (50, 1.0)}  # (requests, seconds)
GLOBAL_LIMIT = 50     # REST requests a second
GATEWAY_LIMIT = 120   # client frames a connection a minute
MESSAGE_CONTENT = 1 << 15
BOT = {"id": "1000", "username": "kiro", "bot": True}
lock = threading.Condition()
calls = []
messages = {}         # message id -> {"id", "channel", "content", "edits"}
buckets = {}          # (route, channel) -> {"remaining", "reset" (epoch)}
blocked = {}          # channel -> epoch time before which a create or edit gets 429
inject = {}           # channel -> retry_after for its next create or edit
recent = []           # epoch times of the last second's REST requests
sessions = {}         # session id -> {"id", "seq", "events", "conn", "intents"}
latest = None         # the session /control/message dispatches in
conns = []            # open gateway connections
state = {"connections": 0, "identifies": 0, "resumes": 0, "sessions": 0, "r429": 0}
last_id = 0
START = time.monotonic()


def log(kind, **entry):
    calls.append(dict({"t": (time.monotonic() - START) * 1000, "kind": kind}, **entry))


def snowflake():
    global last_id
    last_id = max(last_id + 1, (int(time.time() * 1000) - 1420070400000) << 22)
    return str(last_id)


class Conn:
    """One gateway connection: its handler's thread reads it; whatever is sent
    to it is sent with the lock held, then its own send lock."""
    def __init__(self, n, sock):
        self.n, self.sock, self.send_lock = n, sock, threading.Lock()
        self.session = None
        self.open, self.closing = True, False  # closing: nothing more is sent
        self.deadline = time.monotonic() + 2 * HEARTBEAT_MS / 1000
        self.frames = []  # times of the last minute's client frames
        self.mute = False  # heartbeats go unacknowledged (a zombie connection)

    def raw(self, opcode, payload):
        with self.send_lock:
            try:
                self.sock.sendall(fakeserver.ws_frame(opcode, payload))
            except OSError:  # gone, or not reading for 5 s (SO_SNDTIMEO): a broken stream
                self.shutdown()

    def send(self, p):
        if not self.closing:
            log("gateway", op=p["op"], dir="out", t_name=p["t"], s=p["s"], conn=self.n)
            self.raw(1, json.dumps(p).encode())

    def close(self, code, reason=""):
        """A close frame, then no more writing; the client's close frame (or a
        second's wait, in watchdog) ends the reading."""
        if not self.closing:
            log("gateway", event="close", dir="out", code=code, conn=self.n)
            self.raw(8, code.to_bytes(2, "big") + reason.encode())
            self.closing, self.deadline = True, time.monotonic() + 1
            self.shutdown(socket.SHUT_WR)
            lock.notify_all()

    def shutdown(self, how=socket.SHUT_RDWR):
        with contextlib.suppress(OSError):
            self.sock.shutdown(how)


def watchdog(c):
    with lock:
        while c.open:
            if c.deadline > time.monotonic():
                lock.wait(c.deadline - time.monotonic())
            elif c.closing:
                c.shutdown()
                lock.wait(1)
            else:
                c.close(4009, "Session timed out")


def dispatch(s, name, d):
    s["seq"] += 1
    p = {"op": 0, "d": d, "s": s["seq"], "t": name}
    s["events"].append(p)
    if s["conn"]:
        s["conn"].send(p)
    return s["seq"]


def gateway_op(c, op, d, port):
    """One client payload, the lock held."""
    global latest
    if op not in (1, 2, 3, 4, 6, 8):
        return c.close(4001, "Unknown opcode.")
    if op == 1:
        c.deadline = time.monotonic() + 2 * HEARTBEAT_MS / 1000
        lock.notify_all()
        return None if c.mute else c.send({"op": 11, "d": None, "s": None, "t": None})
    if op not in (2, 6):  # presence, voice state, guild members: nothing to do
        return None if c.session else c.close(4003, "Not authenticated.")
    state["identifies" if op == 2 else "resumes"] += 1
    if c.session:
        return c.close(4005, "Already authenticated.")
    if not isinstance(d, dict):
        return c.close(4002, "Error while decoding payload.")
    if d.get("token") != TOKEN:
        return c.close(4004, "Authentication failed.")
    if op == 2:
        intents = d.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool):
            return c.close(4013, "Invalid intent(s).")
        state["sessions"] += 1
        s = {"id": os.urandom(16).hex(), "seq": 0, "events": [], "conn": c, "intents": intents}
        sessions[s["id"]] = c.session = latest = s
        return dispatch(s, "READY", {"v": 10, "session_id": s["id"], "user": BOT,
                                     "resume_gateway_url": "ws://127.0.0.1:%d/resume" % port})
    s = sessions.get(d.get("session_id"))
    if not s:
        return c.send({"op": 9, "d": False, "s": None, "t": None})
    if s["conn"]:  # an older connection the client left
        s["conn"].session = None
    s["conn"], c.session, latest = c, s, s
    for p in s["events"]:
        if p["s"] > (d.get("seq") or 0):
            c.send(p)
    dispatch(s, "RESUMED", {})


class Handler(fakeserver.Handler):
    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/gateway", "/resume"):
            return self.gateway(path)
        if path == "/api/v10/gateway/bot":  # where to connect (a bot asks when not told)
            if self.headers.get("Authorization") != "Bot " + TOKEN:
                return self.send_json(401, {"message": "401: Unauthorized", "code": 0})
            return self.send_json(200, {"url": "ws://127.0.0.1:%d/gateway" % self.server.server_address[1],
                                        "shards": 1, "session_start_limit": {"total": 1000, "remaining": 999,
                                                                             "reset_after": 86400000,
                                                                             "max_concurrency": 1}})
        if path.startswith("/control/"):
            with lock:
                got = {"calls": calls, "messages": list(messages.values()),
                       "state": dict(state, open=bool(conns))}.get(path[len("/control/"):])
                if got is not None:
                    return self.send_json(200, got)
        self.rest()

    def do_POST(self):
        if self.path.startswith("/control/"):
            return self.control(self.path[len("/control/"):])
        self.rest()

    do_PATCH = do_PUT = do_DELETE = do_POST

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) if n else b"{}")

    def control(self, what):
        body = self.body()
        with lock:
            if what == "message":
                if not latest:
                    return self.send_json(409, {"ok": False, "error": "no session yet"})
                text = body["content"]
                mentioned = "<@1000>" in text or "<@!1000>" in text
                d = {"id": snowflake(), "type": 0, "channel_id": str(body["channel_id"]), "content": text,
                     "author": {"id": str(body["author_id"]), "username": body.get("username", "user"), "bot": False},
                     "mentions": [BOT] if mentioned else [],
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
                if body.get("guild_id") is not None:
                    d["guild_id"] = str(body["guild_id"])
                    if not latest["intents"] & MESSAGE_CONTENT and not mentioned:
                        d["content"] = ""
                return self.send_json(200, {"ok": True, "seq": dispatch(latest, "MESSAGE_CREATE", d)})
            if what == "inject":
                inject[str(body["channel_id"])] = float(body["retry_after"])
            elif what == "mute":
                for c in conns:
                    c.mute = True
            elif what == "op":
                for c in conns:
                    if body["op"] == 9 and not body.get("d") and c.session:
                        sessions.pop(c.session["id"], None)
                        c.session = None
                    c.send({"op": int(body["op"]), "d": body.get("d"), "s": None, "t": None})
            elif what in ("drop", "close"):
                victims = list(conns)
                for c in victims:
                    if what == "close":
                        c.close(int(body["code"]))
                    else:
                        c.closing = True
                        c.shutdown()
                lock.wait_for(lambda: not any(c.open for c in victims), 2)
            else:
                return self.send_json(404, {"ok": False})
            return self.send_json(200, {"ok": True})

    def rest(self):
        m = re.fullmatch(r"/api/v10/channels/([^/]+)/(messages|typing)(?:/([^/]+))?", self.path.split("?")[0])
        channel, what, message = m.groups() if m else (None, None, None)
        kind = {("POST", "messages", False): "create", ("PATCH", "messages", True): "edit",
                ("POST", "typing", False): "typing"}.get((self.command, what, bool(message)), "other")
        try:
            body = self.body()
        except ValueError:
            body = None
        text = body.get("content") if isinstance(body, dict) else None
        text = text if isinstance(text, str) else None
        with lock:
            status = self.route(kind, channel, message, body, text, time.time())
            log("rest", method=self.command, route=kind, channel=channel, message=message, content=text,
                status=status)

    def route(self, kind, channel, message, body, text, t):
        limit, per = LIMITS[kind]
        b = buckets.get((kind, channel))
        if not b or t >= b["reset"]:
            b = {"remaining": limit, "reset": t + per}

        def headers(remaining, reset):
            return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": "%.3f" % reset, "X-RateLimit-Reset-After": "%.3f" % (reset - t),
                    "X-RateLimit-Bucket": hashlib.md5(kind.encode()).hexdigest()}

        def limited(retry, scope, reset):  # a 429, which uses up nothing
            state["r429"] += 1
            h = dict(headers(0 if scope == "user" else b["remaining"], reset),
                     **{"Retry-After": str(math.ceil(retry)), "X-RateLimit-Scope": scope})
            if scope == "global":
                h["X-RateLimit-Global"] = "true"
            return self.send_json(429, {"message": "You are being rate limited.", "retry_after": round(retry, 3),
                                        "global": scope == "global"}, h)

        if self.headers.get("Authorization") != "Bot " + TOKEN:
            return self.send_json(401, {"message": "401: Unauthorized", "code": 0}, headers(b["remaining"], b["reset"]))
        recent[:] = [x for x in recent if t - x < 1]
        if len(recent) >= GLOBAL_LIMIT:
            return limited(recent[0] + 1 - t, "global", b["reset"])
        if kind in ("create", "edit"):
            if channel in inject:
                blocked[channel] = t + inject.pop(channel)
            if blocked.get(channel, 0) > t:
                return limited(blocked[channel] - t, "user", blocked[channel])
        if b["remaining"] <= 0:
            return limited(b["reset"] - t, "user", b["reset"])
        b["remaining"] -= 1
        buckets[(kind, channel)] = b
        recent.append(t)
        h = headers(b["remaining"], b["reset"])
        if kind == "typing":
            return self.send_json(204, None, h)
        if kind == "other":
            return self.send_json(404, {"message": "404: Not Found", "code": 0}, h)
        if body is None:
            return self.send_json(400, {"message": "The request body contains invalid JSON.", "code": 50109}, h)
        if not text or not text.strip():
            return self.send_json(400, {"message": "Cannot send an empty message", "code": 50006}, h)
        if len(text) > 2000:  # Python strings are code points
            return self.send_json(400, {"code": 50035, "errors": {"content": {"_errors": [
                {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}},
                "message": "Invalid Form Body"}, h)
        if kind == "create":
            msg = {"id": snowflake(), "channel": channel, "content": text, "edits": 0}
            messages[msg["id"]] = msg
        else:
            msg = messages.get(message)
            if not msg or msg["channel"] != channel:
                return self.send_json(404, {"message": "Unknown Message", "code": 10008}, h)
            msg["content"], msg["edits"] = text, msg["edits"] + 1
        edited = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()) if kind == "edit" else None
        return self.send_json(200, {"id": msg["id"], "channel_id": channel, "content": text, "author": BOT,
                                    "edited_timestamp": edited}, h)

    def gateway(self, path):
        if not fakeserver.ws_upgrade(self):
            return
        # A send to a client that reads nothing for 5 s fails, rather than hold the lock for ever.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))
        with lock:
            state["connections"] += 1
            c = Conn(state["connections"], self.connection)
            conns.append(c)
            log("gateway", event="connect", conn=c.n, path=path)
            c.send({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}, "s": None, "t": None})
        threading.Thread(target=watchdog, args=(c,), daemon=True).start()
        try:
            self.read_loop(c)
        finally:
            with lock:
                c.open, c.closing = False, True
                conns.remove(c)
                if c.session and c.session["conn"] is c:
                    c.session["conn"] = None
                log("gateway", event="disconnect", conn=c.n)
                lock.notify_all()
            c.shutdown()

    def read_loop(self, c):
        for op, payload in fakeserver.ws_messages(self.rfile, lambda p: c.raw(10, p)):
            if op == 8:
                with lock:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    log("gateway", event="close", dir="in", code=code, conn=c.n)
                    if code in (1000, 1001) and c.session:  # Discord ends the session
                        sessions.pop(c.session["id"], None)
                    if not c.closing:
                        c.raw(8, payload[:2])
                        c.closing = True
                return
            with lock:
                t = time.monotonic()
                c.frames = [x for x in c.frames if t - x < 60] + [t]
                if c.closing:
                    continue
                if len(c.frames) > GATEWAY_LIMIT:
                    c.close(4008, "Rate limited.")
                    continue
                try:
                    p = json.loads(payload)
                    op, d = p["op"], p.get("d")
                except (ValueError, TypeError, KeyError):
                    c.close(4002, "Error while decoding payload.")
                    continue
                log("gateway", op=op, dir="in", t_name=p.get("t"), s=p.get("s"), conn=c.n)
                gateway_op(c, op, d, self.server.server_address[1])

def main():
    fakeserver.serve(Handler, sys.argv[1])


if __name__ == "__main__":
    main()
