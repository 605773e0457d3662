"""ZIP containers: what an archive is (DOCX or a refused kind), and the zip-bomb guard.

The guard checks a DOCX's entries against the decompressed-bytes budget before
python-docx inflates anything, and verifies each entry's declared size while reading.
"""

from __future__ import annotations

import copy
import io
import re
import struct
import zipfile
import zlib

from ragledger.services.extraction.cleaning import describe, format_bytes
from ragledger.services.extraction.content_types import DOCX_CONTENT_TYPE
from ragledger.services.extraction.errors import ExtractionError, unsupported

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


def sniff_zip(data: bytes) -> str:
    """DOCX for a Word archive; UnsupportedContentTypeError naming any other ZIP."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if not names:
                raise unsupported("an empty ZIP archive")
            mimetype = _read_bounded(archive, "mimetype", 200) if "mimetype" in names else None
            if mimetype is not None and mimetype.strip() in _ZIP_MIMETYPES:
                raise unsupported(_ZIP_MIMETYPES[mimetype.strip()])
            _, main_type = _main_part(archive) if _CONTENT_TYPES_PART in names else (None, None)
    except _ZIP_ERRORS:
        # The central directory is unreadable (a truncated upload, say): judge by the
        # local file headers, so a damaged Word file is reported as a corrupt DOCX.
        local_names = _local_header_names(data)
        if _WORD_MAIN_PART in local_names or (
            _CONTENT_TYPES_PART in local_names and any(n.startswith("word/") for n in local_names)
        ):
            return DOCX_CONTENT_TYPE
        raise unsupported("a damaged or unreadable ZIP archive") from None
    if main_type is not None:
        for prefix, refusal in _OOXML_MAIN_TYPES:
            if main_type.startswith(prefix):
                if refusal is None:
                    return DOCX_CONTENT_TYPE
                raise unsupported(refusal)
    if _CONTENT_TYPES_PART in names and _WORD_MAIN_PART in names:
        return DOCX_CONTENT_TYPE
    if "META-INF/MANIFEST.MF" in names:
        raise unsupported("a Java archive (JAR)")
    raise unsupported("a ZIP archive that is not a Word document")


def _local_header_names(data: bytes, *, scan: int = 256 * 1024) -> set[str]:
    names: set[str] = set()
    position = data.find(b"PK\x03\x04", 0, scan)
    while position >= 0 and position + 30 <= len(data):
        name_length, extra_length = struct.unpack_from("<HH", data, position + 26)
        raw = data[position + 30 : position + 30 + name_length]
        names.add(raw.decode("utf-8", errors="replace"))
        position = data.find(b"PK\x03\x04", position + 30 + name_length + extra_length, scan)
    return names


def check_docx_archive(data: bytes, max_decompressed_bytes: int) -> None:
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
                    f"the DOCX expands past {format_bytes(max_decompressed_bytes)} "
                    "when decompressed"
                )
            names = {info.filename for info in infos}
            if _CONTENT_TYPES_PART not in names:
                raise ExtractionError(f"the DOCX is corrupt: {_CONTENT_TYPES_PART} is missing")
            main_name, main_type = _main_part(archive)
            if main_type is not None:
                for prefix, refusal in _OOXML_MAIN_TYPES:
                    if refusal is not None and main_type.startswith(prefix):
                        raise unsupported(refusal)
            main_name = main_name or _WORD_MAIN_PART
            if main_name not in names:
                raise ExtractionError(f"the DOCX is corrupt: {main_name} is missing")
            # Each entry proven to inflate to its declared size keeps the total within
            # the declared sum checked above.
            for info in infos:
                _verify_entry_size(archive, info)
    except _ZIP_ERRORS as exc:
        raise ExtractionError(f"the DOCX is corrupt: {describe(exc)}") from exc


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
