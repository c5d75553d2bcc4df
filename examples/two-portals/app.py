#!/usr/bin/env python3
"""A tiny sample app for the two-portals example: it answers every request with JSON saying
who called, as peergate told it (the X-Peer-* headers), and what was asked.

    python3 app.py NAME PORT      # listens on 127.0.0.1:PORT

It knows nothing of keys or signatures: that is peergate's job.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1] if len(sys.argv) > 1 else "app"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 3000


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go out in two writes; on a kept-alive connection (peergate keeps
    # its connections to the app) Nagle's algorithm would hold the body until the head's
    # delayed ACK, about 40 ms per request.
    disable_nagle_algorithm = True

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = {
            "app": NAME,
            "method": self.command,
            "path": self.path,
            "peer": {
                "id": self.headers.get("X-Peer-Id"),
                "name": self.headers.get("X-Peer-Name"),
                "key_id": self.headers.get("X-Peer-Key-Id"),
            },
            "body_bytes": len(body),
        }
        data = (json.dumps(reply, indent=2) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = answer

    def log_message(self, fmt, *args):
        sys.stderr.write(f"[{NAME} app] {self.address_string()} {fmt % args}\n")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Echo).serve_forever()
