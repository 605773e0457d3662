"""Uploaded bytes to cleaned text with sections: content sniffing, parsing, cleaning.

Everything here is a pure function of the bytes it is given. The content type is
decided by `sniff_content_type` from the bytes alone (never a filename or a client's
header); `extract_text` then parses the bytes as that type, cleans the text, and
splits it into sections that tile it, each under the path of headings that encloses it.

Failures are `ExtractionError`s whose message is the reason shown to users when an
ingestion fails; `UnsupportedContentTypeError` is the refusal of a type (HTTP 415).
"""

from __future__ import annotations

import codecs
import copy
import io
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import docx
from docx.enum.style import WD_STYLE_TYPE
from docx.exceptions import PythonDocxError
from docx.opc.exceptions import OpcError
from lxml import etree
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

from ragledger.services.document_text import ExtractedText, Section
from ragledger.services.errors import DomainError

PDF_CONTENT_TYPE = "application/pdf"
DOCX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML_CONTENT_TYPE = "text/html"
MARKDOWN_CONTENT_TYPE = "text/markdown"
PLAIN_TEXT_CONTENT_TYPE = "text/plain"
SUPPORTED_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        PDF_CONTENT_TYPE,
        DOCX_CONTENT_TYPE,
        HTML_CONTENT_TYPE,
        MARKDOWN_CONTENT_TYPE,
        PLAIN_TEXT_CONTENT_TYPE,
    }
)
FORMAT_NAMES: dict[str, str] = {
    PDF_CONTENT_TYPE: "PDF",
    DOCX_CONTENT_TYPE: "DOCX",
    HTML_CONTENT_TYPE: "HTML",
    MARKDOWN_CONTENT_TYPE: "Markdown",
    PLAIN_TEXT_CONTENT_TYPE: "plain text",
}

# Far above any real policy document (a 1,000-page Word file is a few MiB of XML),
# far below what would hurt a worker: the budget for a whole DOCX once inflated.
DEFAULT_MAX_DECOMPRESSED_BYTES = 200 * 2**20
# About 10,000 pages of dense text; beyond that an upload is almost surely not a policy.
DEFAULT_MAX_CHARS = 20_000_000
MAX_HEADING_CHARS = 200

_ACCEPTED = "accepted types: PDF, DOCX, HTML, Markdown and plain text"


class ExtractionError(DomainError):
    """The document's text could not be extracted; the message is the reason users see."""

    status_code = 422

    @property
    def reason(self) -> str:
        """The human-readable reason, as recorded on a failed ingestion."""
        return self.detail


class UnsupportedContentTypeError(ExtractionError):
    """The bytes are not one of the supported document types."""

    status_code = 415


# --- cleaning ------------------------------------------------------------------------

# Vertical tab, form feed, NEL and the Unicode line/paragraph separators end lines in
# the sources they come from (form feeds separate pages in text dumps); keep the break.
_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0 and C1 controls (besides \t and \n), DEL, lone surrogates (unencodable in UTF-8,
# so PostgreSQL would refuse them) and stray byte-order marks.
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufeff]")
_BLANK_LINE_RUNS = re.compile(r"\n{4,}")


def clean_text(text: str) -> str:
    """Normalise text for storage and search; idempotent.

    Line breaks become ``\\n``; NUL and every other control character except ``\\n``
    and ``\\t`` are removed; the text is put in Unicode NFC; trailing whitespace is
    stripped from each line; runs of three or more blank lines become two; and blank
    lines at the start and end are dropped.
    """
    text = _LINE_BREAKS.sub("\n", text)
    # Controls go before NFC: removing one between a letter and a combining mark would
    # otherwise leave a sequence that a second pass composes (not idempotent).
    text = _CONTROLS.sub("", text)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    # Line by line, not with a regex anchored at `$`: that backtracks quadratically on
    # long runs of spaces that do not end a line.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_LINE_RUNS.sub("\n\n\n", text)
    return text.strip("\n")


def _clean_heading(raw: str) -> str:
    # Headings are single-line labels: the cap applies before cleaning too, so a
    # megabyte-long "heading" costs nothing.
    heading = " ".join(clean_text(raw[: MAX_HEADING_CHARS * 4]).split())
    return heading[:MAX_HEADING_CHARS].rstrip()


def _format_bytes(n: int) -> str:
    if n >= 2**20 and n % 2**20 == 0:
        return f"{n // 2**20} MiB"
    if n >= 2**10 and n % 2**10 == 0:
        return f"{n // 2**10} KiB"
    return f"{n:,} bytes"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, zipfile.BadZipFile) and str(exc) == "File is not a zip file":
        return "not a readable ZIP archive (truncated or damaged)"
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    lines = str(message).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text[:200]


def _too_long(max_chars: int) -> ExtractionError:
    return ExtractionError(f"the document's text is longer than {max_chars:,} characters")


def _no_text(hint: str = "") -> ExtractionError:
    return ExtractionError("the document contains no text" + hint)


class _SectionBuilder:
    """Collects cleaned blocks under heading paths and assembles tiling sections."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._length = 0
        self._stack: list[tuple[int, str]] = []
        self._sections: list[tuple[tuple[str, ...], list[str]]] = []

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)

    @property
    def empty(self) -> bool:
        return not self._sections

    def heading(self, level: int, raw: str) -> None:
        title = _clean_heading(raw)
        if not title:
            return
        # Pop every heading at this level or deeper: an h2 after an h3 closes both.
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._append(title, self.path, new_section=True)

    def paragraph(self, raw: str, *, path: tuple[str, ...] | None = None) -> None:
        text = clean_text(raw)
        if not text.strip():
            return
        self._append(text, self.path if path is None else path, new_section=False)

    def _append(self, text: str, path: tuple[str, ...], *, new_section: bool) -> None:
        # Blocks are joined by one blank line; count it now so a huge document fails
        # as soon as it passes the limit, not after all of it is held in memory.
        self._length += len(text) + 2
        if self._length - 2 > self._max_chars:
            raise _too_long(self._max_chars)
        if new_section or not self._sections or self._sections[-1][0] != path:
            self._sections.append((path, [text]))
        else:
            self._sections[-1][1].append(text)

    def build(self, content_type: str, *, page_count: int | None = None) -> ExtractedText:
        if not self._sections:
            raise _no_text()
        sections: list[Section] = []
        offset = 0
        last = len(self._sections) - 1
        for index, (path, blocks) in enumerate(self._sections):
            body = "\n\n".join(blocks)
            if index < last:
                body += "\n\n"
            sections.append(Section(heading_path=path, text=body, start=offset))
            offset += len(body)
        text = "".join(section.text for section in sections)
        return ExtractedText(
            content_type=content_type,
            text=text,
            sections=tuple(sections),
            page_count=page_count,
        )


# --- decoding and sniffing -----------------------------------------------------------

# UTF-32 before UTF-16: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF_BYTES = 64 * 1024


def _decode_text(data: bytes) -> str:
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


def _decode_html(data: bytes) -> str:
    """Decode HTML, honouring a `<meta charset>` only when the bytes are not UTF-8."""
    if any(data.startswith(bom) for bom, _ in _BOMS):
        return _decode_text(data)
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
    return _decode_text(data)


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"\xcf\xfa\xed\xfe", "an executable (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "an executable (Mach-O)"),
    (b"\xca\xfe\xba\xbe", "an executable or Java class file"),
    (b"\x00asm", "a WebAssembly module"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Microsoft Office file (.doc, .xls, .ppt) or a password-protected Office document",
    ),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"OggS", "an Ogg media file"),
    (b"fLaC", "a FLAC audio file"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
)
# Prefixes that real text may also start with: named only when the rest is binary.
_WEAK_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows executable"),
    (b"ID3", "an MP3 audio file"),
    (b"BM", "a BMP image"),
)
_RIFF_KINDS = {b"WEBP": "a WebP image", b"WAVE": "a WAV audio file", b"AVI ": "an AVI video"}


def _unsupported(what: str) -> UnsupportedContentTypeError:
    return UnsupportedContentTypeError(f"unsupported file type: {what} ({_ACCEPTED})")


def sniff_content_type(data: bytes) -> str:
    """Decide a document's content type from its bytes alone.

    Returns one of `SUPPORTED_CONTENT_TYPES`. Raises `ExtractionError` for empty input
    and `UnsupportedContentTypeError`, naming what was found when it can, for anything
    else (images, executables, archives, other office formats, binary data).
    """
    if not data:
        raise ExtractionError("the document is empty")
    if _is_pdf(data):
        return PDF_CONTENT_TYPE
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _sniff_zip(data)
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise _unsupported(what)
    if data.startswith(b"RIFF") and data[8:12] in _RIFF_KINDS:
        raise _unsupported(_RIFF_KINDS[data[8:12]])
    if data[4:8] == b"ftyp":
        raise _unsupported("an MP4/QuickTime media file")

    sample = _decode_text(data[:_SNIFF_BYTES])
    verdict = _binary_verdict(sample)
    if verdict is not None:
        for magic, what in _WEAK_MAGIC:
            if data.startswith(magic):
                raise _unsupported(what)
        raise _unsupported(verdict)
    return _classify_text(sample)


def _is_pdf(data: bytes) -> bool:
    # PDF readers accept the header anywhere in the first 1,024 bytes; allow only
    # whitespace, NULs and byte-order marks before it, so a text that merely quotes
    # "%PDF-" near its start stays text.
    index = data.find(b"%PDF-", 0, 1024)
    if index < 0:
        return False
    prefix = data[:index]
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        prefix = prefix.replace(bom, b"")
    return not prefix.strip(b" \t\r\n\x0c\x00")


def _binary_verdict(sample: str) -> str | None:
    """Why a decoded sample is not text, or None when it is text."""
    if not sample:
        return None
    controls = sum(
        1 for ch in sample if (ch < " " and ch not in "\t\n\r\x0c\x0b\x1b") or ch == "\x7f"
    )
    if controls > 3 and controls * 100 > len(sample):
        return "binary data"
    invalid = sample.count("\ufffd")
    if invalid > 3 and invalid * 20 > len(sample):
        return "binary data or text in an encoding other than UTF-8 or UTF-16 (save it as UTF-8)"
    return None


# --- ZIP containers --------------------------------------------------------------------

# Malformed archives and inflation errors surface through all of these from zipfile.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
)
_CONTENT_TYPES_PART = "[Content_Types].xml"
_WORD_MAIN_PART = "word/document.xml"
_CONTENT_TYPES_MAX_BYTES = 2**20
_MAX_ZIP_ENTRIES = 50_000
_OOXML_MAIN_TYPES: tuple[tuple[str, str | None], ...] = (
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml", None),
    (
        "application/vnd.ms-word.document.macroenabled.main+xml",
        "a macro-enabled Word document (DOCM); save it as DOCX",
    ),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
        "a Word template (DOTX); save it as DOCX",
    ),
    (
        "application/vnd.ms-word.template.macroenabledtemplate.main+xml",
        "a macro-enabled Word template (DOTM); save it as DOCX",
    ),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml", "an Excel workbook (XLSX)"),
    ("application/vnd.ms-excel", "an Excel workbook"),
    ("application/vnd.openxmlformats-officedocument.presentationml", "a PowerPoint file (PPTX)"),
    ("application/vnd.ms-powerpoint", "a PowerPoint file"),
)
_ZIP_MIMETYPES = {
    b"application/vnd.oasis.opendocument.text": "an OpenDocument text file (ODT); save it as DOCX",
    b"application/vnd.oasis.opendocument.spreadsheet": "an OpenDocument spreadsheet (ODS)",
    b"application/vnd.oasis.opendocument.presentation": "an OpenDocument presentation (ODP)",
    b"application/epub+zip": "an EPUB e-book",
}
_OVERRIDE_TAG = re.compile(r"<(?:\w+:)?Override\b[^>]*>", re.I)
_PART_NAME = re.compile(r"""\bPartName\s*=\s*["']([^"']*)["']""", re.I)
_PART_TYPE = re.compile(r"""\bContentType\s*=\s*["']([^"']*)["']""", re.I)


def _read_bounded(archive: zipfile.ZipFile, name: str, limit: int) -> bytes | None:
    """An entry's bytes, or None when it is missing or inflates past `limit`."""
    try:
        with archive.open(name) as member:
            # read(n) inflates at most about n bytes, unlike read() or ZipFile.read.
            blob = member.read(limit + 1)
    except KeyError:
        return None
    return blob if len(blob) <= limit else None


def _main_part(archive: zipfile.ZipFile) -> tuple[str | None, str | None]:
    """The OOXML main part's name and content type, as [Content_Types].xml declares."""
    blob = _read_bounded(archive, _CONTENT_TYPES_PART, _CONTENT_TYPES_MAX_BYTES)
    if blob is None:
        return None, None
    declared = blob.decode("utf-8", errors="replace")
    for tag in _OVERRIDE_TAG.findall(declared):
        name, kind = _PART_NAME.search(tag), _PART_TYPE.search(tag)
        if name is None or kind is None:
            continue
        content_type = kind.group(1).strip().lower()
        if content_type.endswith(".main+xml"):
            return name.group(1).lstrip("/"), content_type
    return None, None


def _sniff_zip(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if not names:
                raise _unsupported("an empty ZIP archive")
            mimetype = _read_bounded(archive, "mimetype", 200) if "mimetype" in names else None
            if mimetype is not None and mimetype.strip() in _ZIP_MIMETYPES:
                raise _unsupported(_ZIP_MIMETYPES[mimetype.strip()])
            _, main_type = _main_part(archive) if _CONTENT_TYPES_PART in names else (None, None)
    except _ZIP_ERRORS:
        # The central directory is unreadable (a truncated upload, say): judge by the
        # local file headers, so a damaged Word file is reported as a corrupt DOCX.
        local_names = _local_header_names(data)
        if _WORD_MAIN_PART in local_names or (
            _CONTENT_TYPES_PART in local_names and any(n.startswith("word/") for n in local_names)
        ):
            return DOCX_CONTENT_TYPE
        raise _unsupported("a damaged or unreadable ZIP archive") from None
    if main_type is not None:
        for prefix, refusal in _OOXML_MAIN_TYPES:
            if main_type.startswith(prefix):
                if refusal is None:
                    return DOCX_CONTENT_TYPE
                raise _unsupported(refusal)
    if _CONTENT_TYPES_PART in names and _WORD_MAIN_PART in names:
        return DOCX_CONTENT_TYPE
    if "META-INF/MANIFEST.MF" in names:
        raise _unsupported("a Java archive (JAR)")
    raise _unsupported("a ZIP archive that is not a Word document")


def _local_header_names(data: bytes, *, scan: int = 256 * 1024) -> set[str]:
    names: set[str] = set()
    position = data.find(b"PK\x03\x04", 0, scan)
    while position >= 0 and position + 30 <= len(data):
        name_length, extra_length = struct.unpack_from("<HH", data, position + 26)
        raw = data[position + 30 : position + 30 + name_length]
        names.add(raw.decode("utf-8", errors="replace"))
        position = data.find(b"PK\x03\x04", position + 30 + name_length + extra_length, scan)
    return names


def _check_docx_archive(data: bytes, max_decompressed_bytes: int) -> None:
    """Refuse a DOCX whose ZIP is broken or inflates past the budget, with bounded memory.

    The declared sizes in the central directory are summed first, which stops honest
    zip bombs at once. Then every entry is inflated in small chunks and checked against
    its declared size, because the directory can lie: `ZipFile.read` (which python-docx
    uses) inflates an entry's whole compressed data before truncating it to the
    declared size, so a lying entry would allocate its real size, however large. Once
    each entry is proven to inflate to exactly its declared size, python-docx's reads
    allocate no more than the sum already checked.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > _MAX_ZIP_ENTRIES:
                raise ExtractionError(f"the DOCX is corrupt: more than {_MAX_ZIP_ENTRIES:,} parts")
            if sum(info.file_size for info in infos) > max_decompressed_bytes:
                raise ExtractionError(
                    f"the DOCX expands past {_format_bytes(max_decompressed_bytes)} "
                    "when decompressed"
                )
            names = {info.filename for info in infos}
            if _CONTENT_TYPES_PART not in names:
                raise ExtractionError(f"the DOCX is corrupt: {_CONTENT_TYPES_PART} is missing")
            main_name, main_type = _main_part(archive)
            if main_type is not None:
                for prefix, refusal in _OOXML_MAIN_TYPES:
                    if refusal is not None and main_type.startswith(prefix):
                        raise _unsupported(refusal)
            main_name = main_name or _WORD_MAIN_PART
            if main_name not in names:
                raise ExtractionError(f"the DOCX is corrupt: {main_name} is missing")
            # Each entry proven to inflate to its declared size keeps the total within
            # the declared sum checked above.
            for info in infos:
                _verify_entry_size(archive, info)
    except _ZIP_ERRORS as exc:
        raise ExtractionError(f"the DOCX is corrupt: {_describe(exc)}") from exc


def _verify_entry_size(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Prove an entry inflates to exactly its declared size, inflating one byte more at most."""
    if info.flag_bits & 0x1:
        raise ExtractionError(f"the DOCX is corrupt: {info.filename} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ExtractionError(
            f"the DOCX is corrupt: {info.filename} uses an unsupported compression method"
        )
    mismatch = ExtractionError(
        f"the DOCX is corrupt: {info.filename} does not match the size its archive declares"
    )
    # A copy that claims one byte more than declared, so zipfile does not silently stop
    # at a false size: if that byte exists, the directory lied.
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1
    size = 0
    with archive.open(probe) as member:
        while size < info.file_size:
            # read(n) inflates about n bytes at a time, so memory stays small.
            chunk = member.read(min(64 * 1024, info.file_size - size))
            if not chunk:
                raise mismatch
            size += len(chunk)
        try:
            extra = member.read(1)
        except zipfile.BadZipFile:
            # The checksum covers the declared bytes; it fails on the one past them.
            raise mismatch from None
        if extra:
            raise mismatch


# --- PDF -------------------------------------------------------------------------------


# pypdf reports malformed input through many exception types, not only its own.
_PDF_ERRORS = (
    PyPdfError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    AssertionError,
    ArithmeticError,
    RecursionError,
    OSError,
    struct.error,
    zlib.error,
)


def _extract_pdf(data: bytes, *, max_chars: int) -> ExtractedText:
    # A file cut short in transit has no end marker; pypdf would otherwise rebuild what
    # it can and quietly return part of the document.
    if b"%%EOF" not in data:
        raise ExtractionError("the PDF is corrupt or unreadable: the file is truncated")
    builder = _SectionBuilder(max_chars)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            # Owner-password-only PDFs (printing or copying "restricted") open with the
            # empty user password, as in every viewer, and are extracted; a real user
            # password is a refusal.
            raise ExtractionError("the PDF is encrypted")
        pages = reader.pages
        page_count = len(pages)
        for number, page in enumerate(pages, start=1):
            builder.paragraph(page.extract_text(), path=(f"Page {number}",))
    except ExtractionError:
        raise
    except FileNotDecryptedError as exc:
        raise ExtractionError("the PDF is encrypted") from exc
    except DependencyError as exc:
        raise ExtractionError("the PDF is encrypted with an unsupported method") from exc
    except _PDF_ERRORS as exc:
        raise ExtractionError(f"the PDF is corrupt or unreadable: {_describe(exc)}") from exc
    if builder.empty:
        raise _no_text(" (scanned pages need OCR, which is not supported)")
    return builder.build(PDF_CONTENT_TYPE, page_count=page_count)


# --- DOCX ------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_W_P, _W_TBL, _W_TR, _W_TC = f"{_W}p", f"{_W}tbl", f"{_W}tr", f"{_W}tc"
_W_SDT, _W_SDT_CONTENT, _W_CUSTOM_XML = f"{_W}sdt", f"{_W}sdtContent", f"{_W}customXml"
_W_T, _W_TAB, _W_PTAB, _W_BR, _W_CR = f"{_W}t", f"{_W}tab", f"{_W}ptab", f"{_W}br", f"{_W}cr"
_W_NO_BREAK_HYPHEN = f"{_W}noBreakHyphen"
# Deleted revisions, the source of moved text, and the legacy copy that Word writes
# next to each text box (mc:Fallback) would all duplicate or resurrect text.
_DOCX_SKIPPED = frozenset({f"{_W}del", f"{_W}moveFrom", _MC_FALLBACK, f"{_W}pPr", f"{_W}rPr"})
_HEADING_STYLE = re.compile(r"heading ([1-9])")
# python-docx and lxml report broken packages and XML through these.
_DOCX_ERRORS = (
    OpcError,
    PythonDocxError,
    etree.LxmlError,
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    OSError,
    zlib.error,
)


def _extract_docx(data: bytes, *, max_decompressed_bytes: int, max_chars: int) -> ExtractedText:
    _check_docx_archive(data, max_decompressed_bytes)
    builder = _SectionBuilder(max_chars)
    try:
        document = docx.Document(io.BytesIO(data))
        levels = _DocxHeadingLevels(document)
        body = document.element.body
        for block in _docx_blocks(body) if body is not None else ():
            if block.tag == _W_TBL:
                builder.paragraph(_docx_table_text(block))
                continue
            text = _docx_paragraph_text(block)
            level = levels.of(block)
            if level is None:
                builder.paragraph(text)
            else:
                builder.heading(level, text)
    except ExtractionError:
        raise
    except _DOCX_ERRORS as exc:
        raise ExtractionError(f"the DOCX is corrupt: {_describe(exc)}") from exc
    return builder.build(DOCX_CONTENT_TYPE)


class _DocxHeadingLevels:
    """Heading levels from paragraph styles: Title is 0, Heading N is N, else outline level."""

    def __init__(self, document: Any) -> None:
        self._part = document.part
        self._by_style: dict[str | None, int | None] = {}

    def of(self, paragraph: Any) -> int | None:
        # Direct formatting wins over the style, as in Word's navigation pane.
        direct = paragraph.xpath("./w:pPr/w:outlineLvl/@w:val")
        if direct:
            return _outline_level(direct[0])
        style_id = paragraph.style
        if style_id not in self._by_style:
            self._by_style[style_id] = self._style_level(style_id)
        return self._by_style[style_id]

    def _style_level(self, style_id: str | None) -> int | None:
        style = self._part.get_style(style_id, WD_STYLE_TYPE.PARAGRAPH)
        # Custom styles often derive from a built-in heading; a short walk up the
        # base-style chain finds it (and stops on a cycle in a malformed file).
        for _ in range(10):
            if style is None:
                return None
            name = (style.name or "").strip().lower()
            if name == "title":
                return 0
            match = _HEADING_STYLE.fullmatch(name)
            if match:
                return int(match.group(1))
            outline = style.element.xpath("./w:pPr/w:outlineLvl/@w:val")
            if outline:
                return _outline_level(outline[0])
            style = style.base_style
        return None


def _outline_level(value: str) -> int | None:
    # Outline levels 0-8 are heading levels 1-9; 9 means body text.
    try:
        level = int(value)
    except ValueError:
        return None
    return level + 1 if 0 <= level <= 8 else None


def _docx_blocks(container: Any) -> Iterator[Any]:
    """Paragraphs and tables in reading order, looking inside content controls."""
    for child in container.iterchildren():
        if child.tag in (_W_P, _W_TBL):
            yield child
        elif child.tag == _W_SDT:
            for content in child.iterchildren(_W_SDT_CONTENT):
                yield from _docx_blocks(content)
        elif child.tag == _W_CUSTOM_XML:
            yield from _docx_blocks(child)


def _docx_paragraph_text(paragraph: Any) -> str:
    parts: list[str] = []
    _docx_collect_text(paragraph, parts)
    return "".join(parts)


def _docx_collect_text(element: Any, parts: list[str]) -> None:
    for child in element.iterchildren():
        tag = child.tag
        if not isinstance(tag, str) or tag in _DOCX_SKIPPED:
            continue
        if tag == _W_T:
            parts.append(child.text or "")
        elif tag in (_W_TAB, _W_PTAB):
            parts.append("\t")
        elif tag in (_W_BR, _W_CR):
            parts.append("\n")
        elif tag == _W_NO_BREAK_HYPHEN:
            parts.append("-")
        elif tag == _W_P:
            # A paragraph inside a text box: keep it on its own line.
            parts.append("\n")
            _docx_collect_text(child, parts)
            parts.append("\n")
        else:
            _docx_collect_text(child, parts)


def _docx_table_text(table: Any) -> str:
    rows: list[str] = []
    for row in table.iterchildren(_W_TR):
        cells = [_docx_cell_text(cell) for cell in _docx_cells(row)]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _docx_cells(row: Any) -> Iterator[Any]:
    for child in row.iterchildren():
        if child.tag == _W_TC:
            yield child
        elif child.tag == _W_SDT:
            for content in child.iterchildren(_W_SDT_CONTENT):
                yield from _docx_cells(content)


def _docx_cell_text(cell: Any) -> str:
    parts: list[str] = []
    for block in _docx_blocks(cell):
        text = _docx_table_text(block) if block.tag == _W_TBL else _docx_paragraph_text(block)
        text = " ".join(text.split())
        if text:
            parts.append(text)
    return " ".join(parts)


# --- HTML ------------------------------------------------------------------------------

# fmt: off
_HTML_SKIPPED = frozenset({
    "script", "style", "head", "noscript", "template", "title", "svg", "math", "iframe",
    "object", "select",
})
_HTML_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "header", "hgroup", "hr", "html", "legend", "li", "main", "nav", "ol", "p", "pre",
    "section", "summary", "table", "ul",
})
# fmt: on
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# HTML collapses ASCII whitespace only; a no-break space is content.
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_SPACES = re.compile(r" {2,}")


class _HtmlTextParser(HTMLParser):
    """Feeds visible text, as blocks and headings, into a section builder."""

    def __init__(self, builder: _SectionBuilder) -> None:
        super().__init__(convert_charrefs=True)
        self._builder = builder
        self._skip: list[str] = []
        self._buffer: list[str] = []
        self._heading: int | None = None
        self._pre = 0
        self._table = 0
        self._cells = 0
        self._lists: list[list[Any]] = []
        self._prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_SKIPPED:
            self._skip.append(tag)
            return
        if self._skip:
            # A body or body content after an unclosed <head> ends the head, as in
            # browsers; inside any other skipped element the tag is invisible.
            if "head" in self._skip and (tag in _HTML_BLOCKS or tag in _HTML_HEADINGS):
                del self._skip[self._skip.index("head") :]
            else:
                return
        if tag == "br":
            self._buffer.append(" " if self._heading is not None else "\n")
        elif tag in ("td", "th"):
            if self._cells:
                self._buffer.append(" | ")
            self._cells += 1
        elif tag == "tr":
            self._end_row()
        elif self._table:
            if tag == "table":
                self._table += 1
            elif tag in _HTML_BLOCKS or tag in _HTML_HEADINGS:
                self._buffer.append(" ")
        elif tag in _HTML_HEADINGS:
            self._flush()
            self._heading = _HTML_HEADINGS[tag]
        elif tag in _HTML_BLOCKS:
            self._flush()
            self._open_block(tag)

    def _open_block(self, tag: str) -> None:
        if tag == "table":
            self._table = 1
            self._cells = 0
        elif tag == "pre":
            self._pre += 1
        elif tag in ("ul", "ol"):
            self._lists.append([tag, 0])
        elif tag == "li":
            if self._lists and self._lists[-1][0] == "ol":
                self._lists[-1][1] += 1
                self._prefix = f"{self._lists[-1][1]}. "
            else:
                self._prefix = "- "

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag in self._skip:
                del self._skip[len(self._skip) - 1 - self._skip[::-1].index(tag) :]
            return
        if tag == "tr":
            self._end_row()
        elif self._table:
            if tag == "table":
                self._table -= 1
                if not self._table:
                    self._flush()
        elif tag in _HTML_HEADINGS or tag in _HTML_BLOCKS:
            self._flush()
            if tag == "pre" and self._pre:
                self._pre -= 1
            elif tag in ("ul", "ol") and self._lists:
                self._lists.pop()

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._buffer.append(data if self._pre else _HTML_SPACE.sub(" ", data))

    def _end_row(self) -> None:
        if self._cells:
            self._buffer.append("\n")
        self._cells = 0

    def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer.clear()
        if self._heading is not None:
            self._builder.heading(self._heading, text)
            self._heading = None
            return
        if not self._pre:
            text = "\n".join(_SPACES.sub(" ", line).strip(" ") for line in text.split("\n"))
        if text.strip():
            # The list marker waits for the item's first text: <li><p>...</p></li>
            # flushes an empty block at <p>, and the marker belongs to the paragraph.
            self._builder.paragraph(self._prefix + text)
            self._prefix = ""

    def close(self) -> None:
        super().close()
        self._flush()


def _extract_html(data: bytes, *, max_chars: int) -> ExtractedText:
    builder = _SectionBuilder(max_chars)
    parser = _HtmlTextParser(builder)
    parser.feed(_decode_html(data))
    parser.close()
    return builder.build(HTML_CONTENT_TYPE)


# --- Markdown and plain text ---------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t](.*))?")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_NOT_PARAGRAPH = re.compile(r" {4}|\t| {0,3}(?:[-+*>]|\d{1,9}[.)])(?:[ \t]|$)| {0,3}#")
_MD_LINK = re.compile(r"!?\[([^\]\n]{0,500})\]\([^)\n]{0,2000}\)")
_MD_MARKS = re.compile(r"\*\*|__|`")


def _markdown_headings(text: str) -> Iterator[tuple[int, int, str]]:
    """(offset of the heading's first line, level, title) for each ATX or setext heading.

    Lines inside fenced code blocks are never headings. A setext underline (``===`` or
    ``---``) makes a heading only of a one-line paragraph that follows a blank line (or
    starts the text): multi-line setext headings are rare, and the narrow rule keeps a
    ``---`` rule or YAML front matter from turning prose into headings.
    """
    fence: str | None = None
    candidate: tuple[int, str] | None = None  # a one-line paragraph an underline would promote
    after_blank = True
    offset = 0
    for line in text.split("\n"):
        start, offset = offset, offset + len(line) + 1
        fence_match = _FENCE.fullmatch(line)
        if fence is not None:
            # A fence closes with the same character, at least as long, nothing after.
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
                and not fence_match.group(2).strip()
            ):
                fence = None
            candidate, after_blank = None, False
            continue
        if fence_match and not (fence_match.group(1)[0] == "`" and "`" in fence_match.group(2)):
            fence = fence_match.group(1)
            candidate, after_blank = None, False
            continue
        atx = _ATX.fullmatch(line)
        if atx:
            title = _atx_title(atx.group(2) or "")
            if title:
                yield start, len(atx.group(1)), title
            candidate, after_blank = None, False
            continue
        setext = _SETEXT.fullmatch(line)
        if setext and candidate is not None:
            title = _markdown_title(candidate[1])
            if title:
                yield candidate[0], 1 if setext.group(1)[0] == "=" else 2, title
                candidate, after_blank = None, False
                continue
        blank = not line.strip()
        promotable = after_blank and not blank and not _NOT_PARAGRAPH.match(line)
        candidate = (start, line) if promotable else None
        after_blank = blank


def _atx_title(raw: str) -> str:
    # The optional closing run of #s, done by hand: a regex for it backtracks
    # quadratically on a long run of #s.
    stripped = raw.rstrip()
    without = stripped.rstrip("#")
    if not without:
        return ""
    if without != stripped and without[-1] in " \t":
        stripped = without
    return _markdown_title(stripped)


def _markdown_title(raw: str) -> str:
    title = _MD_LINK.sub(r"\1", raw[: MAX_HEADING_CHARS * 4])
    title = _MD_MARKS.sub("", title).strip()
    if len(title) > 2 and title[0] == title[-1] and title[0] in "*_":
        title = title[1:-1]
    return _clean_heading(title)


def _extract_markdown(data: bytes, *, max_chars: int) -> ExtractedText:
    text = _checked_text(data, max_chars)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    start = 0
    for offset, level, title in _markdown_headings(text):
        if offset > start:
            path = tuple(name for _, name in stack)
            sections.append(Section(heading_path=path, text=text[start:offset], start=start))
            start = offset
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
    path = tuple(name for _, name in stack)
    sections.append(Section(heading_path=path, text=text[start:], start=start))
    return ExtractedText(content_type=MARKDOWN_CONTENT_TYPE, text=text, sections=tuple(sections))


def _extract_plain(data: bytes, *, max_chars: int) -> ExtractedText:
    text = _checked_text(data, max_chars)
    section = Section(heading_path=(), text=text, start=0)
    return ExtractedText(content_type=PLAIN_TEXT_CONTENT_TYPE, text=text, sections=(section,))


def _checked_text(data: bytes, max_chars: int) -> str:
    text = clean_text(_decode_text(data))
    if not text.strip():
        raise _no_text()
    if len(text) > max_chars:
        raise _too_long(max_chars)
    return text


# --- text classification for sniffing ------------------------------------------------

_HTML_START = re.compile(
    r"\s*(?:<\?xml[^>]{0,500}>\s*)?(?:<!--.{0,2000}?-->\s*)*"
    r"(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])",
    re.I | re.S,
)
_HTML_TAG = re.compile(
    r"</?(?:a|article|b|blockquote|body|br|code|div|em|footer|form|h[1-6]|head|header|hr|i|"
    r"img|input|li|link|main|meta|nav|ol|p|pre|script|section|span|strong|style|table|"
    r"td|th|title|tr|ul)(?=[\s/>])",
    re.I,
)
_MD_TABLE_RULE = re.compile(r"^ {0,3}\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$", re.M)
_MD_FENCE_BLOCK = re.compile(r"^ {0,3}(```|~~~)[^\n]*\n.*?^ {0,3}\1", re.M | re.S)


def _classify_text(sample: str) -> str:
    head = sample[:8192]
    if _HTML_START.match(head):
        return HTML_CONTENT_TYPE
    stripped = head.lstrip()
    lowered = stripped[:4096].lower()
    if lowered.startswith(("<?xml", "<svg")) and "<svg" in lowered:
        raise _unsupported("an SVG image")
    if _looks_like_markdown(clean_text(sample)):
        return MARKDOWN_CONTENT_TYPE
    tags = len(_HTML_TAG.findall(head))
    if (stripped.startswith("<") and tags >= 3) or tags >= 10:
        return HTML_CONTENT_TYPE
    return PLAIN_TEXT_CONTENT_TYPE


def _looks_like_markdown(text: str) -> bool:
    """ATX or setext headings, a fenced code block, a table rule, or several links."""
    if next(_markdown_headings(text), None) is not None:
        return True
    head = text[:16384]
    if _MD_TABLE_RULE.search(head) or _MD_FENCE_BLOCK.search(head):
        return True
    return len(_MD_LINK.findall(head)) >= 2


# --- dispatch --------------------------------------------------------------------------


def extract_text(
    data: bytes,
    content_type: str,
    *,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> ExtractedText:
    """Parse `data` as `content_type` into cleaned text and sections that tile it.

    `content_type` should come from `sniff_content_type`. Raises
    `UnsupportedContentTypeError` for a type outside `SUPPORTED_CONTENT_TYPES` and
    `ExtractionError` when the document is empty, encrypted, corrupt, a zip bomb
    (more than `max_decompressed_bytes` inflated), has no text, or has more than
    `max_chars` characters of text.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in SUPPORTED_CONTENT_TYPES:
        raise UnsupportedContentTypeError(
            f"unsupported content type {content_type[:100]!r} ({_ACCEPTED})"
        )
    if not data:
        raise ExtractionError("the document is empty")
    if kind == PDF_CONTENT_TYPE:
        return _extract_pdf(data, max_chars=max_chars)
    if kind == DOCX_CONTENT_TYPE:
        return _extract_docx(
            data, max_decompressed_bytes=max_decompressed_bytes, max_chars=max_chars
        )
    if kind == HTML_CONTENT_TYPE:
        return _extract_html(data, max_chars=max_chars)
    if kind == MARKDOWN_CONTENT_TYPE:
        return _extract_markdown(data, max_chars=max_chars)
    return _extract_plain(data, max_chars=max_chars)
