#!/usr/bin/python3
"""A small HTTP/1.1 server for kiro.http's specs (Python's standard library
only). It listens on 127.0.0.1, on a port of its own choosing, which it
writes to PORTFILE once it listens; with --tls CERT KEY it speaks HTTPS.

  GET  /stats            {"connections": N, "max_in_flight": N, "requests": N}
  ANY  /echo             {"method":, "path":, "headers": {...}, "body":}
  GET  /status/N         an empty reply with status N
  GET  /slow?ms=N        {"slept": N} after N ms
  GET  /big?bytes=N      N bytes of "x"
  GET  /held             chunked: "first\\n" at once, "second\\n" once /release comes
  GET  /release          lets /held go on
Usage: http_fake.py PORTFILE [--tls CERT KEY]"""
import json
import sys
import threading
import time

from urllib.parse import parse_qs, urlparse

import fakeserver

lock = threading.Lock()
stats = {"connections": 0, "max_in_flight": 0, "requests": 0}
in_flight = 0
released = threading.Event()


class Handler(fakeserver.Handler):
    def setup(self):
        super().setup()
        with lock:
            stats["connections"] += 1

    def reply(self, status, body=b"", ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Fake", "yes")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def serve(self):
        global in_flight
        with lock:
            stats["requests"] += 1
            in_flight += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], in_flight)
        try:
            self.route()
        finally:
            with lock:
                in_flight -= 1

    def route(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if url.path == "/stats":
            with lock:
                self.reply(200, json.dumps(stats).encode())
        elif url.path == "/echo":
            self.reply(200, json.dumps({"method": self.command, "path": self.path,
                                        "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body.decode()}).encode())
        elif url.path.startswith("/status/"):
            self.reply(int(url.path.split("/")[2]))
        elif url.path == "/slow":
            ms = int(q.get("ms", "100"))
            time.sleep(ms / 1000)
            self.reply(200, json.dumps({"slept": ms}).encode())
        elif url.path == "/big":
            self.reply(200, b"x" * int(q.get("bytes", "0")), "text/plain")
        elif url.path == "/held":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part, wait in ((b"first\n", True), (b"second\n", False)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                if wait:
                    released.wait(30)
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/release":
            released.set()
            self.reply(200, b"{}")
        else:
            self.reply(404, b'{"error":"not found"}')

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = serve


def main():
    tls = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 2 and sys.argv[2] == "--tls" else None
    fakeserver.serve(Handler, sys.argv[1], tls)


if __name__ == "__main__":
    main()
