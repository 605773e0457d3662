"""Generated fixture documents, as bytes, for tests of extraction, upload and ingestion.

Every document is built here at test time (nothing binary is committed): PDFs with
reportlab and pypdf, DOCX with python-docx or zipfile, HTML, Markdown and text by hand.
The constants describe what each good document contains, so tests can assert on it.
Expensive generators are cached; the bytes they return are immutable.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Sequence

import docx
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

# --- PDF -------------------------------------------------------------------------------

# (heading, body lines) per page; headings are drawn in a larger bold font.
PDF_PAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Travel policy",
        (
            "Employees book economy class for flights under six hours.",
            "Receipts are required for every expense above 25 euros.",
        ),
    ),
    (
        "Security policy",
        (
            "Laptops must use full-disk encryption.",
            "Report a lost badge to the security desk within one hour.",
        ),
    ),
    (
        "Remote work",
        (
            "Staff may work remotely up to three days a week.",
            "Café Wi-Fi requires the company VPN.",
        ),
    ),
)


def pdf_bytes(pages: Sequence[tuple[str, Sequence[str]]] = PDF_PAGES) -> bytes:
    """A PDF with a text layer: one page per (heading, lines), heading in a larger font."""
    buffer = io.BytesIO()
    # invariant=True drops timestamps and random ids, so the bytes are reproducible.
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    _, height = A4
    for heading, lines in pages:
        y = height - 72
        pdf.setFont("Helvetica-Bold", 18)
        pdf.drawString(72, y, heading)
        y -= 36
        pdf.setFont("Helvetica", 11)
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 16
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def blank_pdf_bytes(page_count: int = 2) -> bytes:
    """A valid PDF whose pages carry no text (like a scan without OCR)."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    for _ in range(page_count):
        pdf.rect(72, 72, 200, 200)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def encrypted_pdf_bytes(
    *,
    user_password: str = "secret",
    owner_password: str = "owner-secret",
    algorithm: str = "AES-128",
) -> bytes:
    """`pdf_bytes()` encrypted; with an empty user password it opens without one."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes())))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def corrupt_pdf_bytes() -> bytes:
    """`pdf_bytes()` cut short, as by an interrupted upload: the header stays intact."""
    data = pdf_bytes()
    return data[: len(data) * 2 // 3]


def garbage_pdf_bytes() -> bytes:
    """A PDF header followed by noise: no objects, no cross-reference table."""
    noise = random.Random(1).randbytes(4096)
    return b"%PDF-1.7\n" + noise + b"\n%%EOF\n"


# --- DOCX ------------------------------------------------------------------------------

DOCX_TITLE = "Expense policy"
DOCX_INTRO = "This policy applies to every employee."
DOCX_TRAVEL = "Travel"
DOCX_TRAVEL_BODY = "Book travel through the portal."
DOCX_FLIGHTS = "Flights"
DOCX_FLIGHTS_BODY = "Economy class for flights under six hours."
DOCX_HOTELS = "Hotels"
DOCX_HOTELS_BODY = "Up to 150 euros a night in capital cities."
DOCX_TABLE_ROWS = (("City", "Limit"), ("Paris", "150 euros"), ("Lyon", "110 euros"))
DOCX_MEALS = "Meals"
DOCX_MEALS_BODY = "Dinner is reimbursed up to 40 euros."


def docx_bytes() -> bytes:
    """A Word document with Title, Heading 1 and Heading 2 paragraphs, body text and a table.

    Structure (heading path -> content):
    (Title) intro; (Title, Travel) body; (Title, Travel, Flights) body;
    (Title, Travel, Hotels) body and a table; (Title, Meals) body.
    """
    document = docx.Document()
    document.add_heading(DOCX_TITLE, level=0)
    document.add_paragraph(DOCX_INTRO)
    document.add_heading(DOCX_TRAVEL, level=1)
    document.add_paragraph(DOCX_TRAVEL_BODY)
    document.add_heading(DOCX_FLIGHTS, level=2)
    document.add_paragraph(DOCX_FLIGHTS_BODY)
    document.add_heading(DOCX_HOTELS, level=2)
    document.add_paragraph(DOCX_HOTELS_BODY)
    table = document.add_table(rows=len(DOCX_TABLE_ROWS), cols=2)
    for row, values in zip(table.rows, DOCX_TABLE_ROWS, strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_heading(DOCX_MEALS, level=1)
    document.add_paragraph(DOCX_MEALS_BODY)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def empty_docx_bytes() -> bytes:
    """A valid Word document with no text at all."""
    buffer = io.BytesIO()
    docx.Document().save(buffer)
    return buffer.getvalue()


_CONTENT_TYPES_XML = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" '
    b'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" ContentType="application/'
    b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    b"</Types>"
)
_RELS_XML = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships/officeDocument" Target="word/document.xml"/>'
    b"</Relationships>"
)
_DOCUMENT_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    b"<w:body><w:p><w:r><w:t>"
)
_DOCUMENT_TAIL = b"</w:t></w:r></w:p></w:body></w:document>"


def minimal_docx_bytes(text: str = "Hello from a hand-made DOCX.") -> bytes:
    """The smallest valid DOCX, built with zipfile: content types, rels, one paragraph."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES_XML)
        archive.writestr("_rels/.rels", _RELS_XML)
        archive.writestr("word/document.xml", _DOCUMENT_HEAD + text.encode() + _DOCUMENT_TAIL)
    return buffer.getvalue()


def corrupt_docx_missing_document_bytes() -> bytes:
    """A ZIP that declares a Word document but has no word/document.xml."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES_XML)
        archive.writestr("_rels/.rels", _RELS_XML)
    return buffer.getvalue()


def corrupt_docx_bad_xml_bytes() -> bytes:
    """A DOCX whose word/document.xml is not well-formed XML."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES_XML)
        archive.writestr("_rels/.rels", _RELS_XML)
        archive.writestr("word/document.xml", _DOCUMENT_HEAD + b"unclosed <w:r>")
    return buffer.getvalue()


def truncated_docx_bytes() -> bytes:
    """`docx_bytes()` cut short: local headers survive, the central directory does not."""
    data = docx_bytes()
    return data[: len(data) // 2]


def random_bytes_docx() -> bytes:
    """Random bytes, the kind of thing uploaded as "report.docx" by mistake."""
    return random.Random(7).randbytes(8192)


@functools.cache
def docx_zip_bomb(inflated_bytes: int = 201 * 2**20) -> bytes:
    """A valid-looking DOCX whose word/document.xml inflates to `inflated_bytes`.

    The central directory states the real sizes (an honest bomb). The default is just
    past the 200 MiB extraction limit; the file itself is about 1/1000 of that
    (deflate's best ratio), and it is built in 1 MiB chunks, never held inflated.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES_XML)
        archive.writestr("_rels/.rels", _RELS_XML)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(_DOCUMENT_HEAD)
            remaining = inflated_bytes - len(_DOCUMENT_HEAD) - len(_DOCUMENT_TAIL)
            chunk = b" " * 2**20
            while remaining > 0:
                member.write(chunk[: min(remaining, len(chunk))])
                remaining -= len(chunk)
            member.write(_DOCUMENT_TAIL)
    return buffer.getvalue()


@functools.cache
def docx_zip_bomb_lying_sizes(
    inflated_bytes: int = 64 * 2**20, declared_bytes: int = 4096
) -> bytes:
    """A DOCX whose central directory lies: word/document.xml claims `declared_bytes`.

    The entry really inflates to `inflated_bytes`, but both headers declare
    `declared_bytes` and carry the CRC of that many leading bytes, so a reader that
    trusts the directory and inflates the whole entry before truncating it (as
    `ZipFile.read` does) allocates the real size and then sees a matching checksum.
    """
    payload_head = _DOCUMENT_HEAD + b" " * (declared_bytes - len(_DOCUMENT_HEAD))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES_XML)
        archive.writestr("_rels/.rels", _RELS_XML)
        with archive.open("word/document.xml", "w") as member:
            member.write(payload_head)
            remaining = inflated_bytes - len(payload_head)
            chunk = b" " * 2**20
            while remaining > 0:
                member.write(chunk[: min(remaining, len(chunk))])
                remaining -= len(chunk)
    data = bytearray(buffer.getvalue())
    name = b"word/document.xml"
    crc = zlib.crc32(payload_head)
    local = _find_header(data, b"PK\x03\x04", name, name_offset=30)
    central = _find_header(data, b"PK\x01\x02", name, name_offset=46)
    struct.pack_into("<I", data, local + 14, crc)
    struct.pack_into("<I", data, local + 22, declared_bytes)
    struct.pack_into("<I", data, central + 16, crc)
    struct.pack_into("<I", data, central + 24, declared_bytes)
    return bytes(data)


def _find_header(data: bytearray, signature: bytes, name: bytes, *, name_offset: int) -> int:
    position = data.find(signature)
    while position >= 0:
        if data[position + name_offset : position + name_offset + len(name)] == name:
            return position
        position = data.find(signature, position + 4)
    raise ValueError(f"no {signature!r} header for {name!r}")


def xlsx_like_bytes() -> bytes:
    """A ZIP shaped like an Excel workbook: content types and xl/workbook.xml."""
    content_types = _CONTENT_TYPES_XML.replace(
        b'PartName="/word/document.xml" ContentType="application/'
        b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"',
        b'PartName="/xl/workbook.xml" ContentType="application/'
        b'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"',
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("xl/workbook.xml", b"<workbook/>")
    return buffer.getvalue()


def plain_zip_bytes() -> bytes:
    """An ordinary ZIP archive holding a text file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", b"not a document")
    return buffer.getvalue()


# --- other binary formats --------------------------------------------------------------


def png_bytes() -> bytes:
    """A tiny real PNG (1x1, white)."""
    raw = b"\x00\xff\xff\xff"

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def exe_bytes() -> bytes:
    """The start of a Windows PE executable: MZ header, DOS stub, binary padding."""
    stub = b"This program cannot be run in DOS mode.\r\r\n$"
    header = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    return header + b"\x00" * 48 + stub + random.Random(3).randbytes(2048)


# --- text formats ----------------------------------------------------------------------

HTML_DOCUMENT = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Handbook (title is not body text)</title>
  <style>body { color: red; }</style>
  <script>var secret = "script text is dropped";</script>
</head>
<body>
  <noscript>Enable JavaScript (dropped)</noscript>
  <h1>Employee handbook</h1>
  <p>Welcome &amp; thank you for joining&nbsp;us.</p>
  <h2>Leave</h2>
  <p>Annual leave is 25 days.<br>Carry-over ends in March.</p>
  <h3>Sick leave</h3>
  <ul><li>Call your manager.</li><li>Send a note after 3 days.</li></ul>
  <h2>Equipment</h2>
  <table><tr><th>Item</th><th>Budget</th></tr><tr><td>Chair</td><td>300 &euro;</td></tr></table>
  <template><p>template text is dropped</p></template>
</body>
</html>
"""


def html_bytes() -> bytes:
    """An HTML page with h1-h3 headings, entities, a list, a table and hidden content."""
    return HTML_DOCUMENT.encode()


MARKDOWN_DOCUMENT = """Preamble before any heading.

# Onboarding

Welcome to the team.

## First day

Bring your ID.

```bash
# this is a comment, not a heading
echo hello
```

### Desk setup

Adjust the chair.

## First week ##

Meet your buddy.

# Offboarding

Return your laptop.
"""


def markdown_bytes() -> bytes:
    """Markdown with ATX headings at three levels and a fenced block holding a `#` line."""
    return MARKDOWN_DOCUMENT.encode()


PLAIN_TEXT_DOCUMENT = """Office hours

The office is open from 8:00 to 19:00.
Visitors sign in at reception.
"""


def plain_text_bytes() -> bytes:
    """Plain UTF-8 text with no markup."""
    return PLAIN_TEXT_DOCUMENT.encode()
