"""What the specs' fake HTTP servers share (http_fake.py, telegram_fake.py,
discord_fake.py, ws_echo.py): a threaded HTTP/1.1 server on 127.0.0.1, on a
port of its own choosing, written to a file once it listens (renamed into
place: a reader never sees half of it), and its pid beside it
(PORTFILE.pid); optionally speaking TLS. And the server's side of a
WebSocket (RFC 6455): the upgrade, frames out, frames in."""
import base64
import hashlib
import json
import os
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, sent at once (the default writes headers and
    # body apart, and Nagle's algorithm and delayed ACKs add 40 ms).
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send_json(self, status, obj, headers=None):
        """obj as a JSON response (204: no body); returns status."""
        body = json.dumps(obj).encode() if status != 204 else b""
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        return status


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_upgrade(handler):
    """Answers a WebSocket upgrade request (101): True, or False once a 400
    has gone back for a request that is not one."""
    key = handler.headers.get("Sec-WebSocket-Key")
    if (handler.headers.get("Upgrade") or "").lower() != "websocket" or not key:
        handler.send_response(400)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return False
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept",
                        base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode())
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    return True


def ws_frame(opcode, payload, fin=True):
    """One frame from the server (unmasked)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([first, n])
    elif n < 65536:
        head = bytes([first, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + n.to_bytes(8, "big")
    return head + payload


def ws_read_frame(rfile):
    """(fin, opcode, payload) of the client's next frame (unmasked), or None
    at the end of the stream."""
    def read(n):
        data = rfile.read(n)
        if len(data) < n:
            raise EOFError
        return data
    try:
        a, b = read(2)
        n = b & 0x7f
        if n >= 126:
            n = int.from_bytes(read(2 if n == 126 else 8), "big")
        mask = read(4) if b & 0x80 else bytes(4)
        data = read(n)
    except (EOFError, OSError):
        return None
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return a & 0x80, a & 0x0f, (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


def ws_messages(rfile, pong):
    """The client's messages, (opcode, data), fragments joined; pings
    answered through pong(payload). A close frame comes last, as (8, its
    payload); the end of the stream ends it without one."""
    parts, kind = [], None
    while True:
        f = ws_read_frame(rfile)
        if f is None:
            return
        fin, op, payload = f
        if op == 9:
            pong(payload)
        elif op == 8:
            yield 8, payload
            return
        elif op < 8:
            kind = op if op else kind
            parts.append(payload)
            if fin:
                yield kind, b"".join(parts)
                parts = []


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # connections made at once all wait to be taken
    daemon_threads = True


def serve(handler, portfile, tls=None):
    """Serves handler until killed; tls: (certificate file, key file)."""
    server = Server(("127.0.0.1", 0), handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(portfile + ".pid", "w") as f:  # (what to stop: a shell's $! may be another process)
        f.write(str(os.getpid()))
    with open(portfile + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(portfile + ".tmp", portfile)
    server.serve_forever()
