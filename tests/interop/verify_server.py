#!/usr/bin/env python3
"""An HTTP server that plays a peer running another RFC 9421 implementation.

Every request it receives is verified with the PyPI package http-message-signatures (through
httpsig_interop.cmd_verify): 200 with the verification result as JSON when the signature and
the covered Content-Digest check out, 401 with the error otherwise. peergate's outbound tests
point a peer's URL at it to show that what peergate signs verifies in an implementation none
of us wrote.

Usage: verify_server.py PUBLIC_KEY_PEM_FILE KEY_ID   (prints "listening on PORT" when ready)
"""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpsig_interop


def make_handler(public_key_pem, key_id):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Head and body go out in two writes: without this, Nagle holds the body ~40 ms
        # on a kept-alive connection.
        disable_nagle_algorithm = True

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            host = self.headers.get("Host", "")
            doc = {
                "public_key_pem": public_key_pem,
                "key_id": key_id,
                "method": self.command,
                "url": f"http://{host}{self.path}",
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_b64": base64.b64encode(body).decode(),
                "max_age": 300,
            }
            try:
                result = httpsig_interop.cmd_verify(doc)
                if body and not result.get("digest_verified"):
                    raise ValueError("the body is not covered by a verified Content-Digest")
                status, out = 200, result
            except Exception as e:  # any refusal of the package is a 401 here
                status, out = 401, {"ok": False, "error": httpsig_interop._describe(e)}
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, *args):
            pass

    return Handler


def main():
    pem_file, key_id = sys.argv[1], sys.argv[2]
    with open(pem_file) as f:
        public_key_pem = f.read()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(public_key_pem, key_id))
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
