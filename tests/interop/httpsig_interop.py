#!/usr/bin/env python3
"""RFC 9421 interop harness: the PyPI `http-message-signatures` package (pyauth) as an
independent implementation that peergate's Rust tests sign for and verify against.

Two subcommands, JSON on stdin, JSON on stdout:

  sign    {"private_key_pem", "key_id", "method", "url", "headers": [[name, value], ...],
           "body_b64"?, "covered"?, "created"?, "expires"?, "nonce"?, "label"?, "tag"?,
           "include_alg"?}
          -> {"ok": true, "headers": [[name, value], ...]   # every header the request carries now
              "added": [[name, value], ...],                # only what signing added
              "signature_base": "...", "signature_params": "...", "label": "..."}

  verify  {"public_key_pem", "key_id", "method", "url", "headers": [[name, value], ...],
           "body_b64"?, "max_age"?, "max_clock_skew"?, "tag"?, "label"?, "require_components"?}
          -> {"ok": true, "label", "covered": [...], "params": {...}, "digest_verified": bool,
              "signature_base": "..."}
          or {"ok": false, "error": "..."}

Exit code 0 on success, 1 when signing or verification fails, 2 on bad input to the harness.
See README.md next to this file for the package versions and examples.
"""

import argparse
import base64
import datetime
import json
import sys

import http_sf
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException


class HarnessInputError(Exception):
    """The JSON given to the harness is unusable (exit code 2)."""


class Headers:
    """Ordered field lines, duplicates kept, names case-insensitive.

    The package reads `items()` (every field line in order, so repeated fields combine the way
    RFC 9421 §2.1 says) and, when signing, deletes and assigns Signature-Input, Signature and
    Content-Digest.
    """

    def __init__(self, pairs):
        self._pairs = []
        for pair in pairs:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise HarnessInputError(f"a header must be a [name, value] pair, got {pair!r}")
            name, value = pair
            if not isinstance(name, str) or not isinstance(value, str):
                raise HarnessInputError(f"header name and value must be strings, got {pair!r}")
            self._pairs.append((name, value))

    def items(self):
        return list(self._pairs)

    def __iter__(self):
        return iter(dict.fromkeys(name for name, _ in self._pairs))

    def __contains__(self, name):
        return any(n.lower() == name.lower() for n, _ in self._pairs)

    def __setitem__(self, name, value):
        # dict semantics: replaces every line of that name, appended at the end
        self._pairs = [(n, v) for n, v in self._pairs if n.lower() != name.lower()]
        self._pairs.append((name, value))

    def __delitem__(self, name):
        if name not in self:
            raise KeyError(name)
        self._pairs = [(n, v) for n, v in self._pairs if n.lower() != name.lower()]

    def get_all(self, name):
        return [v for n, v in self._pairs if n.lower() == name.lower()]

    def to_list(self):
        return [[n, v] for n, v in self._pairs]


class Request:
    """The request interface the package expects: `method` (upper case), an absolute encoded
    `url`, and `headers`. It has no `status_code`, which is how the package tells a request."""

    def __init__(self, method, url, headers):
        self.method = method
        self.url = url
        self.headers = headers


def _require(doc, key, kind):
    if key not in doc:
        raise HarnessInputError(f'missing "{key}"')
    value = doc[key]
    if not isinstance(value, kind):
        raise HarnessInputError(f'"{key}" must be a {kind.__name__}')
    return value


def _optional(doc, key, kind):
    value = doc.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
        raise HarnessInputError(f'"{key}" must be a {kind.__name__} or null')
    return value


def _body(doc):
    b64 = _optional(doc, "body_b64", str)
    if b64 is None:
        return None
    try:
        return base64.b64decode(b64, validate=True)
    except ValueError as e:
        raise HarnessInputError(f'"body_b64" is not valid base64: {e}') from e


def _request(doc):
    method = _require(doc, "method", str)
    url = _require(doc, "url", str)
    headers = Headers(_require(doc, "headers", list))
    return Request(method, url, headers)


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)


def _component_name(serialized):
    """'"@method"' -> '@method'; a component with parameters keeps its serialized form."""
    try:
        item = http_sf.parse(serialized.encode(), tltype="item")
    except (ValueError, TypeError):
        return serialized
    value, params = item
    if isinstance(value, str) and not params:
        return value
    return serialized


def _covers_content_digest(covered):
    for c in covered:
        name = c
        if c.startswith('"'):
            try:
                name = http_sf.parse(c.encode(), tltype="item")[0]
            except (ValueError, TypeError):
                continue
        if name == "content-digest":
            return True
    return False


def cmd_sign(doc):
    key_pem = _require(doc, "private_key_pem", str).encode()
    key_id = _require(doc, "key_id", str)
    req = _request(doc)
    body = _body(doc)
    covered = doc.get("covered")
    if covered is not None and not (isinstance(covered, list) and all(isinstance(c, str) for c in covered)):
        raise HarnessInputError('"covered" must be a list of component strings or null')
    created = _optional(doc, "created", int)
    expires = _optional(doc, "expires", int)
    nonce = _optional(doc, "nonce", str)
    label = _optional(doc, "label", str)
    tag = _optional(doc, "tag", str)
    include_alg = doc.get("include_alg", True)
    if not isinstance(include_alg, bool):
        raise HarnessInputError('"include_alg" must be true or false')

    before = req.headers.to_list()
    has_digest = "content-digest" in req.headers

    kwargs = {
        "key_id": key_id,
        "nonce": nonce,
        "label": label,
        "tag": tag,
        "include_alg": include_alg,
        # The package refuses to sign a message that already has Content-Digest unless told to
        # reuse it; reusing means it checks the field's syntax (and the body, when given).
        "use_existing_digest": has_digest,
    }
    if created is not None:
        kwargs["created"] = _utc(created)
    if expires is not None:
        kwargs["expires"] = _utc(expires)
    if covered is not None:
        kwargs["covered_component_ids"] = covered

    if body is not None and (covered is None or _covers_content_digest(covered)):
        # The package's own digest path: it adds Content-Digest (sha-256) when absent, checks an
        # existing one against the body, and adds content-digest to the covered components.
        kwargs["body"] = body
    elif body is not None and not has_digest:
        # Covered list given without content-digest: still send a digest of the body.
        ContentDigest.add(req.headers, body)

    resolver = MappingKeyResolver(public_keys={}, private_keys={key_id: key_pem})
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=resolver)
    # Exactly what HTTPMessageSigner.sign() does (prepare, sign, apply), split open so the
    # signature base can be reported for debugging.
    prepared = signer.prepare(req, **kwargs)
    key = algorithms.ED25519(private_key=resolver.resolve_private_key(key_id))
    signer.apply(req, prepared, key.sign(prepared.signature_base))

    after = req.headers.to_list()
    added = [h for h in after if h not in before]
    return {
        "ok": True,
        "headers": after,
        "added": added,
        "label": prepared.label,
        "signature_params": prepared.signature_params,
        "signature_base": prepared.signature_base.decode(),
    }


def cmd_verify(doc):
    key_pem = _require(doc, "public_key_pem", str).encode()
    key_id = _require(doc, "key_id", str)
    req = _request(doc)
    body = _body(doc)
    max_age = _optional(doc, "max_age", int)
    skew = _optional(doc, "max_clock_skew", int)
    tag = _optional(doc, "tag", str)
    label = _optional(doc, "label", str)
    required = doc.get("require_components") or ()
    if not (isinstance(required, (list, tuple)) and all(isinstance(c, str) for c in required)):
        raise HarnessInputError('"require_components" must be a list of component strings')

    resolver = MappingKeyResolver(public_keys={key_id: key_pem}, private_keys={})
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=resolver)
    if skew is not None:
        verifier.max_clock_skew = datetime.timedelta(seconds=skew)
    if label is not None and tag is None:
        # Select by label alone (labels are not signed; fine for a test harness).
        verifier.allow_label_only_selection = True

    results = verifier.verify(
        req,
        max_age=None if max_age is None else datetime.timedelta(seconds=max_age),
        expect_tag=tag,
        expect_label=label,
        require_components=tuple(required),
    )
    result = results[0]
    digest_verified = False
    if body is not None:
        # Checks every content-digest component the signature covers against the body, and
        # says whether there was one. A body whose digest is not covered is reported, not refused.
        digest_verified = ContentDigest.verify_components(result.covered_components, body)
    covered = [_component_name(k) for k in result.covered_components if k != '"@signature-params"']
    base = "\n".join(f"{k}: {v}" for k, v in result.covered_components.items())
    return {
        "ok": True,
        "label": result.label,
        "covered": covered,
        "params": result.parameters,
        "digest_verified": digest_verified,
        "signature_base": base,
    }


def _describe(e):
    # A failed Ed25519 check surfaces as the package's InvalidSignature wrapping
    # cryptography's InvalidSignature, both without a message.
    text = str(e)
    if not text:
        cause = e.__cause__
        if cause is not None and type(cause).__name__ == "InvalidSignature":
            return "the signature does not verify over the signature base (cryptographic check failed)"
        return repr(cause) if cause is not None else type(e).__name__
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="RFC 9421 interop harness around the PyPI http-message-signatures package. "
        "Reads one JSON object on stdin, writes one JSON object on stdout."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sign", help="sign a request (Ed25519) and print the headers it must carry")
    sub.add_parser("verify", help="verify a request's Ed25519 signature (and Content-Digest when covered)")
    args = parser.parse_args(argv)

    try:
        doc = json.load(sys.stdin)
        if not isinstance(doc, dict):
            raise HarnessInputError("the input must be a JSON object")
        out = cmd_sign(doc) if args.command == "sign" else cmd_verify(doc)
        code = 0
    except (HarnessInputError, json.JSONDecodeError) as e:
        out, code = {"ok": False, "error": f"bad harness input: {e}"}, 2
    except HTTPMessageSignaturesException as e:
        # InvalidSignature is a subclass; both mean "this implementation says no".
        out, code = {"ok": False, "error": f"{type(e).__name__}: {_describe(e)}"}, 1
    except (ValueError, TypeError, KeyError) as e:
        # e.g. a PEM that does not load, or a key id the resolver does not know
        out, code = {"ok": False, "error": f"{type(e).__name__}: {e}"}, 1
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
