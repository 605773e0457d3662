"""The text of a document as extraction produces it and chunking consumes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path; `start` is its offset in the full text."""

    heading_path: tuple[str, ...]
    text: str
    start: int

    @property
    def end(self) -> int:
        """Offset just after the section's last character."""
        return self.start + len(self.text)


@dataclass(frozen=True, slots=True)
class ExtractedText:
    """A document's cleaned text and its sections, which tile `text` in order."""

    content_type: str
    text: str
    sections: tuple[Section, ...]
    page_count: int | None = None
