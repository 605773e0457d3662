"""Safe names for uploaded files: shown to users, offered on download, never trusted.

A client-supplied file name is display data only (the stored bytes are addressed by
their hash), but it still ends up in `Content-Disposition` headers, logs, exports and
perhaps someone's file system, so it is reduced to one safe path component.
"""

from __future__ import annotations

import re
import unicodedata

FALLBACK_FILENAME = "document"
# The common limit of ext4, NTFS (in UTF-16 units, which 255 UTF-8 bytes never exceed)
# and APFS for one path component.
MAX_FILENAME_BYTES = 255
# A longer "extension" is just part of the name: keeping it whole would leave no stem.
_MAX_EXTENSION_BYTES = 32

# Controls that separate words (tab, line breaks) become spaces; every other control
# character (C0, DEL, C1) goes, with the bidirectional formatting marks that make
# "invoice\u202egnp.exe" display as "invoiceexe.png".
_SPACING_CONTROLS = re.compile(r"[\t\n\r\x0b\x0c\x1c-\x1f\x85]")
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SEPARATORS = re.compile(r"[/\\]")
# Reserved on Windows (and awkward in shells); "/" and "\" are separators, gone already.
_UNSAFE = re.compile(r'[<>:"|?*]')
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{n}" for n in range(1, 10)}
    | {f"LPT{n}" for n in range(1, 10)}
)


def sanitize_filename(name: str | None) -> str:
    """Reduce a client-supplied file name to one safe, non-empty path component.

    Directory parts (``/`` and ``\\``, and ``.``/``..`` components) are dropped, as are
    control and bidirectional formatting characters; the name is put in Unicode NFC,
    runs of whitespace become one space, characters unsafe on common file systems
    (``<>:"|?*``) become ``_``, leading dots and trailing dots or spaces are removed,
    Windows device names are prefixed with ``_``, and the result is cut to 255 UTF-8
    bytes keeping the extension. Returns ``"document"`` when nothing is left.
    """
    if not name:
        return FALLBACK_FILENAME
    name = _INVISIBLE.sub("", _SPACING_CONTROLS.sub(" ", name))
    name = unicodedata.normalize("NFC", name)
    components = [part for part in _SEPARATORS.split(name) if part.strip() not in ("", ".", "..")]
    if not components:
        return FALLBACK_FILENAME
    name = " ".join(components[-1].split())
    name = _UNSAFE.sub("_", name)
    # Leading dots make hidden files (".htaccess") or ".." itself; Windows drops
    # trailing dots and spaces, so two different names would collide there.
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return FALLBACK_FILENAME
    if name.split(".", 1)[0].rstrip().upper() in _WINDOWS_RESERVED:
        name = "_" + name
    return _truncate(name)


def _truncate(name: str) -> str:
    if len(name.encode()) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = dot + extension
    if not stem or " " in extension or len(suffix.encode()) > _MAX_EXTENSION_BYTES:
        stem, suffix = name, ""
    budget = MAX_FILENAME_BYTES - len(suffix.encode())
    # Cut on a character boundary: a split UTF-8 sequence is dropped, not mangled.
    stem = stem.encode()[:budget].decode("utf-8", errors="ignore").rstrip(". ")
    # The stem starts with a character that is neither a dot nor a space (leading ones
    # were stripped), and the budget is far larger than one character, so it is never
    # empty here and the result never starts with the extension's dot.
    return stem + suffix
