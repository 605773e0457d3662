"""Bytes to str for the text formats: byte-order marks, UTF-8, an HTML meta charset."""

from __future__ import annotations

import codecs
import re

# UTF-32 before UTF-16: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
SNIFF_BYTES = 64 * 1024


def decode_text(data: bytes) -> str:
    """Decode by byte-order mark, else as UTF-8; invalid bytes become U+FFFD."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    return data.decode("utf-8", errors="replace")


_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.I
)
# WHATWG: documents labelled Latin-1 or ASCII are decoded as windows-1252.
_CHARSET_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "us-ascii": "cp1252"}


def decode_html(data: bytes) -> str:
    """Decode HTML, honouring a `<meta charset>` only when the bytes are not UTF-8."""
    if any(data.startswith(bom) for bom, _ in _BOMS):
        return decode_text(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    match = _META_CHARSET.search(data[:4096])
    if match:
        label = match.group(1).decode("ascii").lower()
        try:
            return data.decode(_CHARSET_ALIASES.get(label, label), errors="replace")
        except LookupError:
            pass  # an unknown or non-text codec name: fall back to UTF-8
    return decode_text(data)
