"""Client-supplied file names reduced to one safe path component."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragledger.services.filenames import (
    FALLBACK_FILENAME,
    MAX_FILENAME_BYTES,
    sanitize_filename,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("policy.pdf", "policy.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.dll", "evil.dll"),
        ("C:\\Users\\me\\Documents\\report.docx", "report.docx"),
        ("/absolute/path/handbook.md", "handbook.md"),
        ("folder/", "folder"),
        ("notes.txt/..", "notes.txt"),
        ("..", FALLBACK_FILENAME),
        (".", FALLBACK_FILENAME),
        ("...", FALLBACK_FILENAME),
        ("../", FALLBACK_FILENAME),
        (".htaccess", "htaccess"),
        ("..hidden.txt", "hidden.txt"),
        ("", FALLBACK_FILENAME),
        (None, FALLBACK_FILENAME),
        ("   ", FALLBACK_FILENAME),
        ("a\x00b\x07c.txt", "abc.txt"),
        ("line\nbreak\ttab.txt", "line break tab.txt"),
        ("  many    spaces   here.pdf  ", "many spaces here.pdf"),
        ('what?<is>:this|"*.pdf', "what__is__this___.pdf"),
        ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),
        ("report. . .", "report"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("lpt1.tar.gz", "_lpt1.tar.gz"),
        ("console.txt", "console.txt"),
        ("résumé – final (2).docx", "résumé – final (2).docx"),
    ],
)
def test_examples(name: str | None, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_long_names_keep_their_extension_within_255_bytes() -> None:
    ascii_name = sanitize_filename("a" * 400 + ".pdf")
    assert len(ascii_name.encode()) == MAX_FILENAME_BYTES
    assert ascii_name.endswith(".pdf")

    # Multi-byte characters are never split: the result is still valid UTF-8 text.
    wide = sanitize_filename("é" * 300 + ".docx")
    assert len(wide.encode()) <= MAX_FILENAME_BYTES
    assert wide.endswith(".docx")
    assert set(wide.removesuffix(".docx")) == {"é"}

    emoji = sanitize_filename("📄" * 100)
    assert len(emoji.encode()) <= MAX_FILENAME_BYTES
    assert set(emoji) == {"📄"}


def test_an_overlong_extension_is_treated_as_part_of_the_name() -> None:
    name = sanitize_filename("report." + "x" * 400)
    assert len(name.encode()) == MAX_FILENAME_BYTES
    assert name.startswith("report.")


def _check_safe(result: str) -> None:
    assert result
    assert len(result.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert result not in (".", "..")
    assert not result.startswith(".")
    assert "/" not in result
    assert "\\" not in result
    assert "\x00" not in result
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in result)
    assert not any(ch in '<>:"|?*' for ch in result)
    assert result == result.strip()
    assert unicodedata.is_normalized("NFC", result)


@given(st.one_of(st.none(), st.text()))
def test_any_name_becomes_safe(name: str | None) -> None:
    _check_safe(sanitize_filename(name))


_PIECES = ["/", "\\", ".", "..", " ", "\x00", "\n", "\x7f", "\x85", "a", "é", "e\u0301"]
_PIECES += ["📄", "CON", ":", "*", "\u202e", "\u3000", "pdf", "\ud7ff", "\U0010ffff"]
_tricky = st.lists(st.sampled_from(_PIECES), max_size=120).map("".join)


@given(_tricky)
def test_tricky_names_become_safe(name: str) -> None:
    _check_safe(sanitize_filename(name))


@given(st.one_of(st.none(), st.text()))
def test_sanitizing_is_idempotent(name: str | None) -> None:
    once = sanitize_filename(name)
    assert sanitize_filename(once) == once
