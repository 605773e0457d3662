#!/usr/bin/env python3
"""Verify a ragledger answer receipt with nothing but Python's standard library.

    python3 -I verify_receipt.py receipt.json PUBLIC_KEY

PUBLIC_KEY is the server's Ed25519 public key (base64 of the raw 32 bytes, or a PEM
file's path), from GET /api/v1/audit/public-key, obtained and kept independently of
the receipt. For every event in the receipt it checks, in order:
bytes -> hash (sha256(prev_hash || canonical bytes)), hash -> leaf
(sha256(0x00 || hash)), leaf -> root (the RFC 9162 inclusion proof for leaf
position - 1 in the tree of tree_size leaves), and then root -> signature (Ed25519 over
"ragledger-tree-head/v1\n<tree_size>\n<root hex>\n<signed_at>"). A withheld event
(a document the reader may not read) has no bytes: its hash is proved, not its content.
Then it prints what the answer was based on. Exit 0 when every check holds, 1 naming
the first check that failed, 2 on bad usage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys

# --- Ed25519 signature verification (RFC 8032, section 5.1.7), integers only ------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _add(a: tuple, b: tuple) -> tuple:
    """Add two points in extended twisted Edwards coordinates (X, Y, Z, T)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    k1 = (y1 - x1) * (y2 - x2) % _P
    k2 = (y1 + x1) * (y2 + x2) % _P
    k3 = 2 * t1 * t2 * _D % _P
    k4 = 2 * z1 * z2 % _P
    e, f, g, h = k2 - k1, k4 - k3, k4 + k3, k2 + k1
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _scalar_mult(scalar: int, point: tuple) -> tuple:
    result = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _same_point(a: tuple, b: tuple) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % _P == 0 and (a[1] * b[2] - b[1] * a[2]) % _P == 0


def _x_from_y(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if xx == 0:
        return None if sign else 0
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - xx) % _P:
        return None
    if x & 1 != sign:
        x = _P - x
    return x


def _decode_point(data: bytes) -> tuple | None:
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _x_from_y(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_BASE_Y = 4 * pow(5, _P - 2, _P) % _P
_BASE_X = _x_from_y(_BASE_Y, 0)
_BASE = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % _P)


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `message`."""
    if len(signature) != 64:
        return False
    a = _decode_point(public_key)
    r = _decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little")
    return _same_point(_scalar_mult(s, _BASE), _add(r, _scalar_mult(k % _L, a)))


# --- RFC 9162 section 2.1: leaf, node and the inclusion proof check -----------------


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list) -> bytes | None:
    """The root the proof leads to (RFC 9162 2.1.3.2), or None if its shape is wrong."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# --- The receipt ---------------------------------------------------------------------


class CheckError(Exception):
    """A check failed; the message says which."""


def _hex(value: object, what: str, size: int = 32) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raise CheckError(f"{what} is not hex") from None
    if len(raw) != size:
        raise CheckError(f"{what} is not {size} bytes")
    return raw


def tree_head_message(head: dict) -> bytes:
    """The bytes a tree head's signature covers."""
    return (
        f"ragledger-tree-head/v1\n{int(head['tree_size'])}\n{head['root_hash']}\n"
        f"{head['signed_at']}"
    ).encode("ascii")


def verify_receipt(receipt: dict, public_key: bytes) -> list[dict]:
    """The receipt's events, decoded where shown; raise CheckError naming the failed check."""
    head = receipt.get("tree_head") or {}
    try:
        size = int(head["tree_size"])
        root = _hex(head["root_hash"], "the tree head's root hash")
        signature = base64.b64decode(head["signature"], validate=True)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckError(f"the receipt has no well-formed tree head ({exc})") from None
    key_id = hashlib.sha256(public_key).hexdigest()[:16]
    if head.get("key_id") != key_id:
        raise CheckError(
            f"signature: the tree head names key {head.get('key_id')}, "
            f"the public key given is {key_id}"
        )
    if not ed25519_verify(public_key, tree_head_message(head), signature):
        raise CheckError("signature: the tree head's Ed25519 signature is not valid for this key")
    events = receipt.get("events") or []
    if not events:
        raise CheckError("the receipt holds no events")
    decoded = []
    for event in events:
        position = int(event["position"])
        where = f"event at position {position} ({event.get('event_type')})"
        prev_hash = _hex(event["prev_hash"], f"{where}: prev_hash")
        event_hash = _hex(event["hash"], f"{where}: hash")
        content = None
        if event.get("canonical") is not None:
            canonical = event["canonical"].encode("utf-8")
            if hashlib.sha256(prev_hash + canonical).digest() != event_hash:
                raise CheckError(f"bytes -> hash: {where}: its bytes do not hash to its hash")
            content = json.loads(canonical)
            if content.get("position") != position:
                raise CheckError(
                    f"bytes -> hash: {where}: its bytes name position {content.get('position')}"
                )
        elif not event.get("withheld"):
            raise CheckError(f"bytes -> hash: {where}: no canonical bytes and not marked withheld")
        leaf = _leaf(event_hash)
        if event.get("leaf_hash") is not None and _hex(event["leaf_hash"], where) != leaf:
            raise CheckError(
                f"hash -> leaf: {where}: the leaf hash given is not sha256(0x00 || hash)"
            )
        proof = [_hex(p, f"{where}: proof element") for p in event["inclusion_proof"]]
        found = root_from_inclusion(position - 1, size, leaf, proof)
        if found is None:
            raise CheckError(f"leaf -> root: {where}: the proof does not fit a tree of size {size}")
        if found != root:
            raise CheckError(
                f"leaf -> root: {where}: the proof leads to {found.hex()}, "
                f"not the signed root {root.hex()}"
            )
        decoded.append({**event, "content": content})
    return decoded


def describe(receipt: dict, events: list[dict]) -> list[str]:
    """What the answer was based on, from the verified events."""
    lines = [
        f"answer {receipt.get('answer_id')}: {len(events)} events proved in the tree of "
        f"{receipt['tree_head']['tree_size']} events signed at {receipt['tree_head']['signed_at']}"
        f" by key {receipt['tree_head']['key_id']}"
    ]
    chunk_texts: dict[str, str] = {}
    for event in events:
        content = event["content"]
        if content and event["event_type"] == "DocumentChunked":
            for chunk in content["payload"]["chunks"]:
                chunk_texts[chunk["chunk_id"]] = chunk["text"]
    for event in events:
        content, kind = event["content"], event["event_type"]
        if content is None:
            lines.append(f"  #{event['position']} {kind}: withheld (hash {event['hash']})")
            continue
        payload = content["payload"]
        if kind == "QuestionAsked":
            lines.append(f"  #{event['position']} question: {payload['question']!r}")
        elif kind == "ContextRetrieved":
            lines.append(f"  #{event['position']} context: {len(payload['chunks'])} chunks")
            for chunk in payload["chunks"]:
                text = chunk_texts.get(chunk["chunk_id"])
                if text is None:
                    state = "text not in the receipt"
                elif hashlib.sha256(text.encode("utf-8")).hexdigest() == chunk["text_sha256"]:
                    state = "text matches"
                else:
                    state = "TEXT DOES NOT MATCH its hash"
                lines.append(
                    f"    [{chunk['n']}] {chunk['title']!r} document {chunk['document_id']} "
                    f"version {chunk['version']} chunk {chunk['chunk_id']} "
                    f"sha256 {chunk['text_sha256']} ({state})"
                )
        elif kind == "AnswerGenerated":
            lines.append(
                f"  #{event['position']} answer by {payload['model']}: {payload['answer']!r}"
            )
        elif kind == "AnswerFailed":
            lines.append(f"  #{event['position']} answer failed: {payload['reason']}")
        else:
            lines.append(f"  #{event['position']} {kind}")
    return lines


def load_public_key(text: str) -> bytes:
    """Raw 32 bytes from base64, or from a PEM SubjectPublicKeyInfo file's path."""
    if os.path.isfile(text):
        with open(text, encoding="ascii") as handle:
            text = handle.read()
    text = text.strip()
    if text.startswith("-----BEGIN"):
        body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
        der = base64.b64decode(body)
        if len(der) != 44 or der[:12] != bytes.fromhex("302a300506032b6570032100"):
            raise ValueError("not an Ed25519 public key")
        return der[12:]
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        public_key = load_public_key(argv[2])
        with open(argv[1], encoding="utf-8") as handle:
            receipt = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"cannot read the receipt or the key: {exc}", file=sys.stderr)
        return 2
    try:
        events = verify_receipt(receipt, public_key)
    except CheckError as exc:
        print(f"INVALID: {exc}")
        return 1
    except (KeyError, TypeError, ValueError) as exc:
        print(f"INVALID: the receipt is malformed ({exc!r})")
        return 1
    print("valid: bytes -> hash -> leaf -> inclusion proof -> root -> signature all hold")
    for line in describe(receipt, events):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
