"""What the specs' fake HTTP servers share (http_fake.py, telegram_fake.py):
a threaded HTTP/1.1 server on 127.0.0.1, on a port of its own choosing,
written to a file once it listens (renamed into place: a reader never sees
half of it), and its pid beside it (PORTFILE.pid); optionally speaking TLS."""
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
