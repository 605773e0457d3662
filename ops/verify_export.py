#!/usr/bin/env python3
"""Verify a ragledger export with nothing but Python's standard library.

    python3 verify_export.py export.jsonl PUBLIC_KEY_BASE64 [--prev-hash HEX]

Checks, line by line, that positions follow each other, that each event's prev_hash is
the previous event's hash, and that each hash is sha256(prev_hash || canonical_bytes);
then that the final digest names the last event and carries a valid Ed25519 signature
by PUBLIC_KEY (the raw 32-byte key in base64, from GET /api/v1/audit/public-key, which
you should have obtained and kept independently). An export that starts at position 1
chains from 32 zero bytes; one that starts later needs the hash of the event before it
(--prev-hash), e.g. from a digest you kept. Exit 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
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


# --- The hash chain ---------------------------------------------------------------------

HASHED_KEYS = (
    "position",
    "event_id",
    "stream_id",
    "stream_version",
    "event_type",
    "schema_version",
    "recorded_at",
    "payload",
    "metadata",
)


def canonical_bytes(event: dict) -> bytes:
    """Sorted keys, no whitespace, UTF-8, non-ASCII as is: the bytes the hash covers."""
    obj = {key: event[key] for key in HASHED_KEYS}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_export(
    lines: list[str], public_key: bytes, prev_hash: bytes | None = None
) -> str | None:
    """None when the export holds; otherwise what is wrong, naming the position."""
    events = [json.loads(line) for line in lines if line.strip()]
    if not events or "digest" not in events[-1]:
        return "the export does not end with a signed digest"
    digest = events.pop()["digest"]
    expected_position = events[0]["position"] if events else None
    prev = prev_hash if prev_hash is not None else bytes(32)
    if events and events[0]["position"] != 1 and prev_hash is None:
        return "the export starts after position 1: pass --prev-hash"
    for event in events:
        position = event["position"]
        if position != expected_position:
            return f"position {expected_position} is missing"
        if bytes.fromhex(event["prev_hash"]) != prev:
            return f"position {position}: prev_hash does not match the previous hash"
        digest_bytes = hashlib.sha256(prev + canonical_bytes(event)).digest()
        if digest_bytes.hex() != event["hash"]:
            return f"position {position}: the hash does not match the content"
        prev = digest_bytes
        expected_position += 1
    last_position = events[-1]["position"] if events else 0
    if digest["position"] != last_position or digest["hash"] != prev.hex():
        return "the digest does not name the last event of the export"
    message = "ragledger-digest/v1\n{position}\n{hash}\n{signed_at}".format(**digest)
    signature = base64.b64decode(digest["signature"])
    if not ed25519_verify(public_key, message.encode("ascii"), signature):
        return "the digest's signature is not valid for this public key"
    return None


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--prev-hash"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        lines = handle.readlines()
    prev = bytes.fromhex(argv[4]) if len(argv) == 5 else None
    problem = verify_export(lines, base64.b64decode(argv[2]), prev)
    if problem:
        print(f"INVALID: {problem}")
        return 1
    print(f"valid: {sum(1 for line in lines if line.strip()) - 1} events, signed digest checked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
