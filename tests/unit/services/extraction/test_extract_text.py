"""Extraction: sniffing by content, each format's text and headings, cleaning, refusals."""

from __future__ import annotations

import codecs
import contextlib
import io
import time
import tracemalloc
import unicodedata
import zipfile

import docx
import pytest
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import parse_xml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragledger.services.document_text import ExtractedText
from ragledger.services.extraction import (
    DOCX_CONTENT_TYPE,
    HTML_CONTENT_TYPE,
    MARKDOWN_CONTENT_TYPE,
    MAX_HEADING_CHARS,
    PDF_CONTENT_TYPE,
    PLAIN_TEXT_CONTENT_TYPE,
    SUPPORTED_CONTENT_TYPES,
    ExtractionError,
    UnsupportedContentTypeError,
    clean_text,
    extract_text,
    sniff_content_type,
)
from tests import fixtures_documents as docs

MiB = 2**20


def assert_tiles(result: ExtractedText) -> None:
    """Sections cover the text in order, without gaps or overlaps, and the text is clean."""
    assert result.sections, "at least one section"
    assert result.sections[0].start == 0
    for previous, section in zip(result.sections, result.sections[1:], strict=False):
        assert section.start == previous.end
    for section in result.sections:
        assert section.text
        assert result.text[section.start : section.end] == section.text
        assert all(0 < len(title) <= MAX_HEADING_CHARS for title in section.heading_path)
    assert result.sections[-1].end == len(result.text)
    assert "".join(section.text for section in result.sections) == result.text
    assert clean_text(result.text) == result.text


def paths(result: ExtractedText) -> list[tuple[str, ...]]:
    return [section.heading_path for section in result.sections]


def section_under(result: ExtractedText, *path: str) -> str:
    matches = [section.text for section in result.sections if section.heading_path == path]
    assert len(matches) == 1, f"one section under {path}, got {paths(result)}"
    return matches[0]


# --- sniffing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(docs.pdf_bytes(), PDF_CONTENT_TYPE, id="pdf"),
        pytest.param(b"\n\r\n  \t" + docs.pdf_bytes(), PDF_CONTENT_TYPE, id="pdf-leading-space"),
        pytest.param(codecs.BOM_UTF8 + docs.pdf_bytes(), PDF_CONTENT_TYPE, id="pdf-after-bom"),
        pytest.param(docs.encrypted_pdf_bytes(), PDF_CONTENT_TYPE, id="encrypted-pdf"),
        pytest.param(docs.corrupt_pdf_bytes(), PDF_CONTENT_TYPE, id="truncated-pdf"),
        pytest.param(docs.docx_bytes(), DOCX_CONTENT_TYPE, id="docx"),
        pytest.param(docs.minimal_docx_bytes(), DOCX_CONTENT_TYPE, id="hand-made-docx"),
        pytest.param(docs.truncated_docx_bytes(), DOCX_CONTENT_TYPE, id="truncated-docx"),
        pytest.param(
            docs.corrupt_docx_missing_document_bytes(), DOCX_CONTENT_TYPE, id="docx-no-body"
        ),
        pytest.param(docs.html_bytes(), HTML_CONTENT_TYPE, id="html"),
        pytest.param(docs.markdown_bytes(), MARKDOWN_CONTENT_TYPE, id="markdown"),
        pytest.param(docs.plain_text_bytes(), PLAIN_TEXT_CONTENT_TYPE, id="text"),
        # "notes.txt" that is really HTML is HTML; names never enter into it.
        pytest.param(
            b"<html><body><p>Hello</p></body></html>", HTML_CONTENT_TYPE, id="html-named-txt"
        ),
        pytest.param(
            b"<h1>Title</h1>\n<p>One</p>\n<p>Two</p>", HTML_CONTENT_TYPE, id="html-fragment"
        ),
        pytest.param(
            b'<?xml version="1.0"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            b"<body>x</body></html>",
            HTML_CONTENT_TYPE,
            id="xhtml",
        ),
        pytest.param(
            codecs.BOM_UTF16_LE + "<!doctype html><p>héllo</p>".encode("utf-16-le"),
            HTML_CONTENT_TYPE,
            id="utf16-html",
        ),
        # A GitHub-style README starts with HTML but is Markdown.
        pytest.param(
            b'<p align="center"><img src="logo.png"></p>\n\n# Project\n\nText.\n',
            MARKDOWN_CONTENT_TYPE,
            id="readme-with-html-banner",
        ),
        pytest.param(b"Title\n=====\n\nBody.\n", MARKDOWN_CONTENT_TYPE, id="setext"),
        pytest.param(
            b"Intro\n\n```\ncode\n```\n\nOutro\n", MARKDOWN_CONTENT_TYPE, id="fenced-code"
        ),
        pytest.param(
            b"| a | b |\n|---|---|\n| 1 | 2 |\n", MARKDOWN_CONTENT_TYPE, id="markdown-table"
        ),
        pytest.param(
            b"The file begins with %PDF-1.7 as its magic number.\n",
            PLAIN_TEXT_CONTENT_TYPE,
            id="text-quoting-pdf-magic",
        ),
        pytest.param(b"#hashtag is not a heading\n", PLAIN_TEXT_CONTENT_TYPE, id="hashtag"),
        pytest.param(b"Hello\x00 world\n", PLAIN_TEXT_CONTENT_TYPE, id="text-with-a-nul"),
        pytest.param(
            b"caf\xe9 au lait, one bad byte in a long enough line of text\n",
            PLAIN_TEXT_CONTENT_TYPE,
            id="text-with-an-invalid-byte",
        ),
        pytest.param(
            codecs.BOM_UTF16_BE + "plain words".encode("utf-16-be"),
            PLAIN_TEXT_CONTENT_TYPE,
            id="utf16-text",
        ),
        pytest.param(b"MZ is the name of our team.\n", PLAIN_TEXT_CONTENT_TYPE, id="text-mz"),
    ],
)
def test_sniff_decides_by_content(data: bytes, expected: str) -> None:
    assert sniff_content_type(data) == expected


@pytest.mark.parametrize(
    ("data", "named"),
    [
        pytest.param(docs.png_bytes(), "PNG image", id="png"),
        pytest.param(docs.exe_bytes(), "Windows executable", id="exe"),
        pytest.param(b"\x7fELF\x02\x01\x01" + bytes(64), "ELF", id="elf"),
        pytest.param(b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG image", id="jpeg"),
        pytest.param(b"\x1f\x8b\x08\x00" + bytes(32), "gzip", id="gzip"),
        pytest.param(
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), "legacy Microsoft Office", id="doc"
        ),
        pytest.param(b"{\\rtf1\\ansi hello}", "RTF", id="rtf"),
        pytest.param(
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG", id="svg"
        ),
        pytest.param(docs.xlsx_like_bytes(), "Excel", id="xlsx"),
        pytest.param(docs.plain_zip_bytes(), "not a Word document", id="zip"),
        pytest.param(docs.random_bytes_docx(), "binary data", id="random-bytes-named-docx"),
        pytest.param("plain words".encode("utf-16-le"), "binary data", id="utf16-without-bom"),
    ],
)
def test_sniff_refuses_other_types_and_names_them(data: bytes, named: str) -> None:
    with pytest.raises(UnsupportedContentTypeError, match=named) as caught:
        sniff_content_type(data)
    assert caught.value.status_code == 415
    assert "accepted types" in str(caught.value)


def test_sniff_refuses_jar_docm_and_odt() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        archive.writestr("Main.class", b"\xca\xfe\xba\xbe")
    with pytest.raises(UnsupportedContentTypeError, match="Java archive"):
        sniff_content_type(buffer.getvalue())

    with pytest.raises(UnsupportedContentTypeError, match="DOCM"):
        sniff_content_type(_docm_bytes())

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", "<office:document-content/>")
    with pytest.raises(UnsupportedContentTypeError, match="OpenDocument text"):
        sniff_content_type(buffer.getvalue())


def test_sniff_empty_upload_is_an_extraction_error_not_a_type_refusal() -> None:
    with pytest.raises(ExtractionError, match=r"^the document is empty$") as caught:
        sniff_content_type(b"")
    assert not isinstance(caught.value, UnsupportedContentTypeError)


def _docm_bytes() -> bytes:
    source = zipfile.ZipFile(io.BytesIO(docs.minimal_docx_bytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info in source.infolist():
            blob = source.read(info)
            if info.filename == "[Content_Types].xml":
                blob = blob.replace(
                    b"vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
                    b"vnd.ms-word.document.macroEnabled.main+xml",
                )
            archive.writestr(info, blob)
    return buffer.getvalue()


# --- PDF -----------------------------------------------------------------------------


def test_pdf_text_per_page() -> None:
    result = extract_text(docs.pdf_bytes(), PDF_CONTENT_TYPE)

    assert_tiles(result)
    assert result.content_type == PDF_CONTENT_TYPE
    assert result.page_count == len(docs.PDF_PAGES)
    assert paths(result) == [(f"Page {n}",) for n in range(1, len(docs.PDF_PAGES) + 1)]
    for section, (heading, lines) in zip(result.sections, docs.PDF_PAGES, strict=True):
        assert heading in section.text
        for line in lines:
            assert line in section.text
    assert "Café Wi-Fi" in result.text


def test_pdf_with_only_an_owner_password_is_extracted() -> None:
    for algorithm in ("RC4-128", "AES-128", "AES-256"):
        data = docs.encrypted_pdf_bytes(user_password="", algorithm=algorithm)
        result = extract_text(data, PDF_CONTENT_TYPE)
        assert result.page_count == len(docs.PDF_PAGES)
        assert "Travel policy" in result.text


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_pdf_with_a_user_password_is_refused(algorithm: str) -> None:
    data = docs.encrypted_pdf_bytes(algorithm=algorithm)
    with pytest.raises(ExtractionError, match=r"^the PDF is encrypted$"):
        extract_text(data, PDF_CONTENT_TYPE)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(docs.corrupt_pdf_bytes(), id="truncated"),
        pytest.param(docs.garbage_pdf_bytes(), id="garbage"),
        pytest.param(b"%PDF-1.4\n%%EOF\n", id="header-only"),
        pytest.param(docs.plain_text_bytes(), id="not-a-pdf"),
    ],
)
def test_corrupt_pdf_is_refused(data: bytes) -> None:
    with pytest.raises(ExtractionError, match=r"^the PDF is corrupt or unreadable: "):
        extract_text(data, PDF_CONTENT_TYPE)


def test_pdf_without_a_text_layer_has_no_text() -> None:
    with pytest.raises(ExtractionError, match=r"^the document contains no text"):
        extract_text(docs.blank_pdf_bytes(), PDF_CONTENT_TYPE)


# --- DOCX ----------------------------------------------------------------------------


def test_docx_headings_body_and_table() -> None:
    result = extract_text(docs.docx_bytes(), DOCX_CONTENT_TYPE)

    assert_tiles(result)
    title = docs.DOCX_TITLE
    assert paths(result) == [
        (title,),
        (title, docs.DOCX_TRAVEL),
        (title, docs.DOCX_TRAVEL, docs.DOCX_FLIGHTS),
        (title, docs.DOCX_TRAVEL, docs.DOCX_HOTELS),
        (title, docs.DOCX_MEALS),
    ]
    assert docs.DOCX_INTRO in section_under(result, title)
    flights = section_under(result, title, docs.DOCX_TRAVEL, docs.DOCX_FLIGHTS)
    assert flights.startswith(docs.DOCX_FLIGHTS)  # the heading's text stays searchable
    assert docs.DOCX_FLIGHTS_BODY in flights
    hotels = section_under(result, title, docs.DOCX_TRAVEL, docs.DOCX_HOTELS)
    for row in docs.DOCX_TABLE_ROWS:
        assert " | ".join(row) in hotels
    assert docs.DOCX_MEALS_BODY in section_under(result, title, docs.DOCX_MEALS)
    assert result.page_count is None


def test_docx_custom_heading_styles_content_controls_and_revisions() -> None:
    document = docx.Document()
    document.add_heading("Policy", level=1)
    custom = document.styles.add_style("Policy Heading", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = document.styles["Heading 2"]
    document.add_paragraph("Scope", style="Policy Heading")
    document.add_paragraph("Applies to all.")
    body = document.element.body
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    # A paragraph inside a content control, one with a direct outline level, and
    # a tracked deletion that must not come back.
    body.insert(
        len(body) - 1,
        parse_xml(
            f"<w:sdt {w}><w:sdtContent><w:p><w:r><w:t>Inside a control.</w:t></w:r></w:p>"
            "</w:sdtContent></w:sdt>"
        ),
    )
    body.insert(
        len(body) - 1,
        parse_xml(
            f'<w:p {w}><w:pPr><w:outlineLvl w:val="0"/></w:pPr><w:r><w:t>Annex</w:t></w:r></w:p>'
        ),
    )
    body.insert(
        len(body) - 1,
        parse_xml(
            f"<w:p {w}><w:r><w:t>Kept</w:t></w:r><w:del><w:r><w:delText>gone</w:delText>"
            "</w:r></w:del><w:r><w:tab/><w:t>text</w:t></w:r></w:p>"
        ),
    )
    buffer = io.BytesIO()
    document.save(buffer)

    result = extract_text(buffer.getvalue(), DOCX_CONTENT_TYPE)

    assert_tiles(result)
    assert paths(result) == [("Policy",), ("Policy", "Scope"), ("Annex",)]
    assert "Inside a control." in section_under(result, "Policy", "Scope")
    annex = section_under(result, "Annex")
    assert "Kept\ttext" in annex
    assert "gone" not in result.text


def test_docx_without_text() -> None:
    with pytest.raises(ExtractionError, match=r"^the document contains no text$"):
        extract_text(docs.empty_docx_bytes(), DOCX_CONTENT_TYPE)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(
            docs.corrupt_docx_missing_document_bytes(),
            "the DOCX is corrupt: word/document.xml is missing",
            id="no-document-xml",
        ),
        pytest.param(
            docs.corrupt_docx_bad_xml_bytes(), "the DOCX is corrupt: ", id="malformed-xml"
        ),
        pytest.param(docs.truncated_docx_bytes(), "the DOCX is corrupt: ", id="truncated"),
        pytest.param(docs.random_bytes_docx(), "the DOCX is corrupt: ", id="random-bytes"),
        pytest.param(
            docs.plain_zip_bytes(),
            "the DOCX is corrupt: [Content_Types].xml is missing",
            id="plain-zip",
        ),
    ],
)
def test_corrupt_docx_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ExtractionError) as caught:
        extract_text(data, DOCX_CONTENT_TYPE)
    assert str(caught.value).startswith(reason)
    assert caught.value.reason == str(caught.value)


def test_docm_is_refused_as_a_type() -> None:
    with pytest.raises(UnsupportedContentTypeError, match="DOCM"):
        extract_text(_docm_bytes(), DOCX_CONTENT_TYPE)


def test_zip_bomb_fails_fast_within_little_memory() -> None:
    bomb = docs.docx_zip_bomb()  # word/document.xml inflates to 201 MiB
    assert len(bomb) < MiB
    assert sniff_content_type(bomb) == DOCX_CONTENT_TYPE

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(
            ExtractionError, match=r"^the DOCX expands past 200 MiB when decompressed$"
        ):
            extract_text(bomb, DOCX_CONTENT_TYPE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 8 * MiB


def test_zip_bomb_against_a_small_limit() -> None:
    bomb = docs.docx_zip_bomb(8 * MiB)
    with pytest.raises(ExtractionError, match=r"^the DOCX expands past 1 MiB when decompressed$"):
        extract_text(bomb, DOCX_CONTENT_TYPE, max_decompressed_bytes=1 * MiB)
    # Under a large enough limit the same file is a (blank) document, not a bomb.
    with pytest.raises(ExtractionError, match=r"^the document contains no text$"):
        extract_text(bomb, DOCX_CONTENT_TYPE, max_decompressed_bytes=16 * MiB)


def test_zip_bomb_with_a_lying_central_directory_stays_small() -> None:
    # ZipFile.read (python-docx's way in) would inflate all 64 MiB of this entry before
    # truncating it to the 4 KiB its forged directory entry and checksum declare.
    bomb = docs.docx_zip_bomb_lying_sizes(64 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(ExtractionError, match="does not match the size its archive declares"):
            extract_text(bomb, DOCX_CONTENT_TYPE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


# --- HTML ----------------------------------------------------------------------------


def test_html_headings_blocks_and_entities() -> None:
    result = extract_text(docs.html_bytes(), HTML_CONTENT_TYPE)

    assert_tiles(result)
    handbook = "Employee handbook"
    # The second h2 after an h3 pops back to the h1's level.
    assert paths(result) == [
        (handbook,),
        (handbook, "Leave"),
        (handbook, "Leave", "Sick leave"),
        (handbook, "Equipment"),
    ]
    assert "Welcome & thank you for joining\u00a0us." in section_under(result, handbook)
    assert "Annual leave is 25 days.\nCarry-over ends in March." in result.text
    sick = section_under(result, handbook, "Leave", "Sick leave")
    assert "- Call your manager." in sick
    assert "- Send a note after 3 days." in sick
    assert "Item | Budget\nChair | 300 €" in section_under(result, handbook, "Equipment")
    for hidden in ("title is not body", "color: red", "script text", "JavaScript", "template"):
        assert hidden not in result.text


def test_html_unclosed_head_ordered_lists_pre_and_no_headings() -> None:
    html = (
        b"<html><head><title>Hidden<p>Shown after an unclosed head.</p>"
        b"<ol><li>First</li><li><p>Second</p></li></ol>"
        b"<pre>  indented\n    code</pre>"
    )
    result = extract_text(html, HTML_CONTENT_TYPE)

    assert_tiles(result)
    assert paths(result) == [()]
    assert result.text == (
        "Shown after an unclosed head.\n\n1. First\n\n2. Second\n\n  indented\n    code"
    )


def test_html_meta_charset_is_honoured_when_not_utf8() -> None:
    html = '<meta charset="windows-1252"><p>Caf\u00e9 \u20ac5</p>'.encode("cp1252")
    assert extract_text(html, HTML_CONTENT_TYPE).text == "Café €5"


def test_html_without_visible_text() -> None:
    with pytest.raises(ExtractionError, match=r"^the document contains no text$"):
        extract_text(b"<html><head><title>t</title></head><body> </body></html>", HTML_CONTENT_TYPE)


# --- Markdown and plain text ---------------------------------------------------------


def test_markdown_headings_and_code_fences() -> None:
    result = extract_text(docs.markdown_bytes(), MARKDOWN_CONTENT_TYPE)

    assert_tiles(result)
    assert result.text == docs.MARKDOWN_DOCUMENT.strip("\n")
    assert paths(result) == [
        (),
        ("Onboarding",),
        ("Onboarding", "First day"),
        ("Onboarding", "First day", "Desk setup"),
        ("Onboarding", "First week"),  # closing #s are not part of the title
        ("Offboarding",),
    ]
    first_day = section_under(result, "Onboarding", "First day")
    assert first_day.startswith("## First day")
    assert "# this is a comment, not a heading" in first_day


def test_markdown_setext_headings_tildes_and_non_headings() -> None:
    text = (
        "Guide\n=====\n\nIntro.\n\nInstall\n-------\n\n~~~\n# not a heading\n~~~\n\n"
        "#hashtag\n    # indented code\n####### seven\n\n---\n\n"
        "## **Bold** [link](https://example.com) ##\n"
    )
    result = extract_text(text.encode(), MARKDOWN_CONTENT_TYPE)

    assert_tiles(result)
    assert paths(result) == [("Guide",), ("Guide", "Install"), ("Guide", "Bold link")]


def test_plain_text_is_one_section() -> None:
    result = extract_text(docs.plain_text_bytes(), PLAIN_TEXT_CONTENT_TYPE)

    assert_tiles(result)
    assert paths(result) == [()]
    assert result.text == docs.PLAIN_TEXT_DOCUMENT.strip()
    assert result.content_type == PLAIN_TEXT_CONTENT_TYPE


def test_long_headings_are_capped() -> None:
    result = extract_text(("# " + "x" * 500 + "\n\nbody").encode(), MARKDOWN_CONTENT_TYPE)
    assert result.sections[0].heading_path == ("x" * MAX_HEADING_CHARS,)
    assert "x" * 500 in result.text


# --- cleaning and limits -------------------------------------------------------------


def test_nul_bytes_and_invalid_utf8_are_cleaned() -> None:
    data = b"Hello\x00 wor\x00ld\r\ncaf\xc3\xa9 \xff\xfe broken\x01\x1b\r\n"
    result = extract_text(data, sniff_content_type(data))

    assert result.text == "Hello world\ncafé \ufffd\ufffd broken"


def test_clean_text_rules() -> None:
    assert clean_text("a\r\nb\rc") == "a\nb\nc"
    assert clean_text("e\u0301") == "\u00e9"  # NFC
    assert clean_text("x  \t\ny\u00a0\n") == "x\ny"
    assert clean_text("a\n\n\n\n\n\nb") == "a\n\n\nb"  # at most two blank lines
    assert clean_text("\n\n  indented\n\n") == "  indented"
    assert clean_text("tab\tkept\x00\x07\x1f\x7f\x9f!") == "tab\tkept!"
    assert clean_text("next\x85line\u2028end") == "next\nline\nend"
    assert clean_text("page one\x0cpage two") == "page one\npage two"
    assert clean_text("\ufeffbom") == "bom"
    assert clean_text("lone\ud800surrogate") == "lonesurrogate"


def test_whitespace_only_and_empty_documents() -> None:
    for content_type in (PLAIN_TEXT_CONTENT_TYPE, MARKDOWN_CONTENT_TYPE, HTML_CONTENT_TYPE):
        with pytest.raises(ExtractionError, match=r"^the document contains no text$"):
            extract_text(b" \n\t\x00\r\n ", content_type)
    for content_type in SUPPORTED_CONTENT_TYPES:
        with pytest.raises(ExtractionError, match=r"^the document is empty$"):
            extract_text(b"", content_type)


def test_text_longer_than_the_limit_is_refused() -> None:
    for data, content_type in (
        (b"word " * 100, PLAIN_TEXT_CONTENT_TYPE),
        (b"# h\n\n" + b"word " * 100, MARKDOWN_CONTENT_TYPE),
        (b"<p>" + b"word " * 100 + b"</p>", HTML_CONTENT_TYPE),
        (docs.docx_bytes(), DOCX_CONTENT_TYPE),
        (docs.pdf_bytes(), PDF_CONTENT_TYPE),
    ):
        with pytest.raises(ExtractionError, match="longer than 100 characters"):
            extract_text(data, content_type, max_chars=100)


def test_content_type_is_checked_and_parameters_ignored() -> None:
    with pytest.raises(UnsupportedContentTypeError):
        extract_text(b"hello", "image/png")
    result = extract_text(b"hello", "Text/Plain; charset=utf-8")
    assert result.content_type == PLAIN_TEXT_CONTENT_TYPE


# --- properties ----------------------------------------------------------------------


@given(st.text())
def test_clean_text_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_clean_text_leaves_no_control_characters(text: str) -> None:
    cleaned = clean_text(text)
    assert all(ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs") for ch in cleaned)
    assert "\r" not in cleaned
    assert "\n\n\n\n" not in cleaned
    assert unicodedata.is_normalized("NFC", cleaned)
    cleaned.encode("utf-8")  # storable: PostgreSQL takes any text that encodes


_words = st.text(alphabet="abcdefghij ", min_size=1, max_size=20).filter(str.strip)
_blocks = st.lists(
    st.one_of(
        st.tuples(st.integers(min_value=1, max_value=6), _words),
        st.lists(_words, min_size=1, max_size=3).map(" ".join),
    ),
    min_size=1,
    max_size=25,
)


@given(_blocks)
def test_markdown_sections_tile_and_follow_the_heading_stack(blocks: list) -> None:
    lines: list[str] = []
    expected: list[tuple[str, ...]] = []
    stack: list[tuple[int, str]] = []
    for block in blocks:
        if isinstance(block, tuple):
            level, title = block
            lines.append("#" * level + " " + title)
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, " ".join(title.split())))
            expected.append(tuple(name for _, name in stack))
        else:
            lines.append(block)
    source = "\n\n".join(lines)
    if not source.strip():
        return

    result = extract_text(source.encode(), MARKDOWN_CONTENT_TYPE)

    assert_tiles(result)
    heading_paths = [s.heading_path for s in result.sections if s.text.startswith("#")]
    assert heading_paths == expected


def _extract_or_reason(data: bytes, content_type: str) -> ExtractedText | str:
    try:
        return extract_text(data, content_type)
    except ExtractionError as error:
        return str(error)


@given(st.text(max_size=300))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_text_in_any_text_format_tiles_or_has_no_text(text: str) -> None:
    for content_type in (PLAIN_TEXT_CONTENT_TYPE, MARKDOWN_CONTENT_TYPE, HTML_CONTENT_TYPE):
        result = _extract_or_reason(text.encode(), content_type)
        if isinstance(result, str):
            assert result in ("the document contains no text", "the document is empty")
        else:
            assert_tiles(result)


@given(st.binary(max_size=2000))
@settings(max_examples=50)
def test_arbitrary_bytes_fail_only_with_extraction_errors(data: bytes) -> None:
    for content_type in sorted(SUPPORTED_CONTENT_TYPES):
        result = _extract_or_reason(data, content_type)
        if not isinstance(result, str):
            assert_tiles(result)
    with contextlib.suppress(ExtractionError):
        sniff_content_type(data)
