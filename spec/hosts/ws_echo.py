#!/usr/bin/python3
"""A WebSocket peer for kiro.websocket's spec (Python's standard library
only): GET /echo upgrades, then each text or binary message comes back as
it came, except these texts:
  "frag N"      N, sent back in three fragments
  "big N"       N bytes of "x" in one message
  "close C R"   a close frame with code C and reason R, then the end
  "drop"        the connection cut without a close frame
  "silent"      nothing back (the client's receive times out)
A client's close frame is answered with the same code. Pings get pongs.
Usage: ws_echo.py PORTFILE [--tls CERT KEY]"""
import sys

import fakeserver


class Handler(fakeserver.Handler):
    def do_GET(self):
        if self.path != "/echo" or not fakeserver.ws_upgrade(self):
            return
        send = self.connection.sendall
        for kind, data in fakeserver.ws_messages(self.rfile, lambda p: send(fakeserver.ws_frame(10, p))):
            if kind == 8:  # close: answered with its code
                send(fakeserver.ws_frame(8, data[:2]))
                return
            words = data.split(b" ", 2) if kind == 1 else [b""]
            if words[0] == b"frag":
                n = words[1]
                send(fakeserver.ws_frame(1, n[:1], False) + fakeserver.ws_frame(0, n[1:2], False)
                     + fakeserver.ws_frame(0, n[2:]))
            elif words[0] == b"big":
                send(fakeserver.ws_frame(1, b"x" * int(words[1])))
            elif words[0] == b"close":
                send(fakeserver.ws_frame(8, int(words[1]).to_bytes(2, "big") + (words[2] if len(words) > 2 else b"")))
                fakeserver.ws_read_frame(self.rfile)  # its answer
                return
            elif words[0] == b"drop":
                return
            elif words[0] != b"silent":
                send(fakeserver.ws_frame(kind, data))

if __name__ == "__main__":
    tls = tuple(sys.argv[3:5]) if len(sys.argv) > 4 and sys.argv[2] == "--tls" else None
    fakeserver.serve(Handler, sys.argv[1], tls)
