"""Self-tests of httpsig_interop.py: the harness against itself and against RFC 9421 B.2.6.

Run: python3 -m unittest discover -s tests/interop -v
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "httpsig_interop.py")

# RFC 9421 B.1.4 test-key-ed25519
PRIV = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n"
PUB = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\n-----END PUBLIC KEY-----\n"

B26_BODY = b'{"hello": "world"}'
B26_HEADERS = [
    ["Host", "example.com"],
    ["Date", "Tue, 20 Apr 2021 02:07:55 GMT"],
    ["Content-Type", "application/json"],
    [
        "Content-Digest",
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    ],
    ["Content-Length", "18"],
]
B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIG = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
B26_URL = "https://example.com/foo?param=Value&Pet=dog"


def run(cmd, doc):
    p = subprocess.run(
        [sys.executable, HARNESS, cmd], input=json.dumps(doc), capture_output=True, text=True, check=False
    )
    out = json.loads(p.stdout)
    return p.returncode, out


def b64(b):
    return base64.b64encode(b).decode()


def b26_verify_doc(**changes):
    doc = {
        "public_key_pem": PUB,
        "key_id": "test-key-ed25519",
        "method": "POST",
        "url": B26_URL,
        "headers": B26_HEADERS + [["Signature-Input", B26_INPUT], ["Signature", B26_SIG]],
        "body_b64": b64(B26_BODY),
    }
    doc.update(changes)
    return doc


def replace_header(headers, name, value):
    return [[n, value if n.lower() == name.lower() else v] for n, v in headers]


class Rfc9421B26(unittest.TestCase):
    def test_sign_reproduces_the_rfc_signature(self):
        code, out = run(
            "sign",
            {
                "private_key_pem": PRIV,
                "key_id": "test-key-ed25519",
                "method": "POST",
                "url": B26_URL,
                "headers": B26_HEADERS,
                "body_b64": b64(B26_BODY),
                "covered": ["date", "@method", "@path", "@authority", "content-type", "content-length"],
                "created": 1618884473,
                "label": "sig-b26",
                "include_alg": False,
            },
        )
        self.assertEqual(code, 0, out)
        self.assertEqual(out["added"], [["Signature-Input", B26_INPUT], ["Signature", B26_SIG]])
        base = out["signature_base"].encode()
        self.assertEqual(len(base), 284)
        self.assertEqual(
            hashlib.sha256(base).hexdigest(), "e6402577f54303accfda63dfbde1a7b8c5e5e6f3f7898637b7d78dc07ee1896a"
        )
        # The existing sha-512 Content-Digest is kept as is.
        self.assertEqual(out["headers"][:5], B26_HEADERS)

    def test_verify_accepts_the_rfc_signature(self):
        code, out = run("verify", b26_verify_doc())
        self.assertEqual(code, 0, out)
        self.assertTrue(out["ok"])
        self.assertEqual(out["label"], "sig-b26")
        self.assertEqual(out["covered"], ["date", "@method", "@path", "@authority", "content-type", "content-length"])
        self.assertEqual(out["params"], {"created": 1618884473, "keyid": "test-key-ed25519"})
        # content-digest is not covered by B.2.6, so the body is not bound to the signature.
        self.assertFalse(out["digest_verified"])

    def test_negative_variants_fail(self):
        h = B26_HEADERS
        sig = [["Signature-Input", B26_INPUT], ["Signature", B26_SIG]]
        cases = {
            "N1 host": b26_verify_doc(url="https://example.org/foo?param=Value&Pet=dog"),
            "N2 method": b26_verify_doc(method="PUT"),
            "N3 path": b26_verify_doc(url="https://example.com/foo/?param=Value&Pet=dog"),
            "N4 content-length": b26_verify_doc(headers=replace_header(h, "Content-Length", "19") + sig),
            "N5 params swapped": b26_verify_doc(
                headers=h
                + [
                    [
                        "Signature-Input",
                        'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
                        ';keyid="test-key-ed25519";created=1618884473',
                    ],
                    ["Signature", B26_SIG],
                ]
            ),
            "N6 alg hmac": b26_verify_doc(
                headers=h + [["Signature-Input", B26_INPUT + ';alg="hmac-sha256"'], ["Signature", B26_SIG]]
            ),
            "N7 labels": b26_verify_doc(
                headers=h + [["Signature-Input", B26_INPUT], ["Signature", B26_SIG.replace("sig-b26", "sig1")]]
            ),
            "N8 no date": b26_verify_doc(headers=[x for x in h if x[0] != "Date"] + sig),
            "N9 second date": b26_verify_doc(headers=h + [["Date", "Wed, 21 Apr 2021 02:07:55 GMT"]] + sig),
            "wrong key id": b26_verify_doc(key_id="other"),
            "max_age": b26_verify_doc(max_age=300),
        }
        for name, doc in cases.items():
            with self.subTest(name):
                code, out = run("verify", doc)
                self.assertEqual(code, 1, out)
                self.assertFalse(out["ok"])
                self.assertTrue(out["error"])
        code, out = run("verify", cases["N2 method"])
        self.assertIn("does not verify", out["error"])


class SelfRoundTrip(unittest.TestCase):
    URL = "https://alice.example.org:8443/api/x?y=1"

    def sign(self, **extra):
        doc = {
            "private_key_pem": PRIV,
            "key_id": "k1",
            "method": "POST",
            "url": self.URL,
            "headers": [["Host", "alice.example.org:8443"], ["Content-Type", "application/json"]],
            "body_b64": b64(b'{"a": 1}'),
        }
        doc.update(extra)
        code, out = run("sign", doc)
        self.assertEqual(code, 0, out)
        return doc, out

    def verify(self, sign_doc, signed, **extra):
        doc = {
            "public_key_pem": PUB,
            "key_id": sign_doc["key_id"],
            "method": sign_doc["method"],
            "url": sign_doc["url"],
            "headers": signed["headers"],
            "max_age": 300,
        }
        if "body_b64" in sign_doc:
            doc["body_b64"] = sign_doc["body_b64"]
        doc.update(extra)
        return run("verify", doc)

    def test_defaults(self):
        d, s = self.sign()
        names = [n for n, _ in s["added"]]
        self.assertEqual(names, ["Content-Digest", "Signature-Input", "Signature"])
        self.assertEqual(dict(s["added"])["Content-Digest"], "sha-256=:" + b64(hashlib.sha256(b'{"a": 1}').digest()) + ":")
        si = dict(s["added"])["Signature-Input"]
        self.assertTrue(si.startswith('pyhms=("@method" "@authority" "@target-uri" "content-digest");created='), si)
        self.assertTrue(si.endswith(';keyid="k1";alg="ed25519"'), si)
        self.assertIn('"@authority": alice.example.org:8443\n', s["signature_base"])
        self.assertIn('"@target-uri": https://alice.example.org:8443/api/x?y=1\n', s["signature_base"])
        code, out = self.verify(d, s)
        self.assertEqual(code, 0, out)
        self.assertEqual(out["covered"], ["@method", "@authority", "@target-uri", "content-digest"])
        self.assertTrue(out["digest_verified"])
        self.assertEqual(out["params"]["alg"], "ed25519")
        self.assertLessEqual(abs(out["params"]["created"] - int(time.time())), 5)

    def test_all_parameters(self):
        now = int(time.time())
        d, s = self.sign(
            created=now, expires=now + 60, nonce="n-123", label="peer", tag="peergate",
            covered=["@method", "@authority", "@path", "@query", "content-digest", "content-type"],
        )
        si = dict(s["added"])["Signature-Input"]
        self.assertEqual(
            si,
            'peer=("@method" "@authority" "@path" "@query" "content-digest" "content-type")'
            f';created={now};keyid="k1";alg="ed25519";expires={now + 60};nonce="n-123";tag="peergate"',
        )
        code, out = self.verify(d, s, tag="peergate")
        self.assertEqual(code, 0, out)
        self.assertEqual(out["params"]["nonce"], "n-123")
        self.assertTrue(out["digest_verified"])
        code, out = self.verify(d, s, label="peer")
        self.assertEqual(code, 0, out)

    def test_no_body(self):
        d2, s2 = self.sign(method="GET", body_b64=None)
        self.assertEqual([n for n, _ in s2["added"]], ["Signature-Input", "Signature"])
        code, out = self.verify(d2, s2)
        self.assertEqual(code, 0, out)
        self.assertEqual(out["covered"], ["@method", "@authority", "@target-uri"])
        self.assertFalse(out["digest_verified"])

    def test_tampering_fails(self):
        d, s = self.sign()
        cases = {
            "body": dict(body_b64=b64(b'{"a": 2}')),
            "method": dict(method="PUT"),
            "query": dict(url="https://alice.example.org:8443/api/x?y=2"),
            "port": dict(url="https://alice.example.org/api/x?y=1"),
            "digest": dict(
                headers=replace_header(s["headers"], "Content-Digest", "sha-256=:" + b64(hashlib.sha256(b"x").digest()) + ":")
            ),
            "other key": dict(public_key_pem=ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()),
        }
        for name, change in cases.items():
            with self.subTest(name):
                code, out = self.verify(d, s, **change)
                self.assertEqual(code, 1, out)

    def test_expired_fails(self):
        now = int(time.time())
        d, s = self.sign(created=now - 120, expires=now - 60)
        code, out = self.verify(d, s, max_age=None)
        self.assertEqual(code, 1, out)
        self.assertIn("expires", out["error"])

    def test_bad_input_exit_2(self):
        p = subprocess.run([sys.executable, HARNESS, "verify"], input="[1]", capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertFalse(json.loads(p.stdout)["ok"])
        code, out = run("sign", {"key_id": "x"})
        self.assertEqual(code, 2)


class ForeignParameterOrder(unittest.TestCase):
    """A signature in peergate's own wire format (label `peer`, parameter order created,
    expires, nonce, keyid, alg, tag), made here with `cryptography` alone: the harness verifies
    signatures whatever their label and parameter order."""

    def test_peergate_shaped_signature_verifies(self):
        now = int(time.time())
        body = b'{"x": true}'
        digest = "sha-256=:" + b64(hashlib.sha256(body).digest()) + ":"
        params = (
            '("@method" "@authority" "@path" "@query" "content-digest" "content-type" "content-length")'
            f';created={now};expires={now + 60};nonce="abc";keyid="k1";alg="ed25519";tag="peergate"'
        )
        base = "\n".join(
            [
                '"@method": POST',
                '"@authority": alice.example.org',
                '"@path": /api/x',
                '"@query": ?',
                f'"content-digest": {digest}',
                '"content-type": application/json',
                f'"content-length": {len(body)}',
                f'"@signature-params": {params}',
            ]
        )
        key = serialization.load_pem_private_key(PRIV.encode(), password=None)
        sig = b64(key.sign(base.encode()))
        doc = {
            "public_key_pem": PUB,
            "key_id": "k1",
            "method": "POST",
            "url": "https://alice.example.org:443/api/x",
            "headers": [
                ["Host", "alice.example.org"],
                ["Content-Type", "application/json"],
                ["Content-Length", str(len(body))],
                ["Content-Digest", digest],
                ["Signature-Input", "peer=" + params],
                ["Signature", f"peer=:{sig}:"],
            ],
            "body_b64": b64(body),
            "max_age": 300,
        }
        code, out = run("verify", doc)
        self.assertEqual(code, 0, out)
        self.assertEqual(out["signature_base"], base)
        self.assertTrue(out["digest_verified"])
        self.assertEqual(list(out["params"]), ["created", "expires", "nonce", "keyid", "alg", "tag"])


if __name__ == "__main__":
    unittest.main()
