"""Numbered paging shared by the console's lists, and the query strings their links keep."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import QueryParams

PAGE_SIZE = 20
# A query string carried back through a form is never longer than this.
MAX_BACK_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Pager:
    """Where a numbered page sits: its number and whether others come before or after."""

    page: int
    has_previous: bool
    has_next: bool


def page_number(value: int | None) -> int:
    """A page number from a query parameter, at least 1 and at most 100 000."""
    return max(1, min(value or 1, 100_000))


def query_prefix(params: QueryParams) -> str:
    """The query's filters (not its page, nor empty fields) as `a=1&b=2&`, for page links.

    A paging link is `?{prefix}page=N`, so the next page lists what this one filtered.
    """
    kept = [(k, v) for k, v in params.multi_items() if k != "page" and v != ""]
    return urlencode(kept) + "&" if kept else ""


def back_query(value: str, allowed: Iterable[str]) -> str:
    """A list's query string sent back by a form, cut to the `allowed` names ('' if none).

    Only names the list knows survive, re-encoded, so the redirect that uses it can only
    reach that list with those filters.
    """
    names = set(allowed)
    pairs = parse_qsl(value[:MAX_BACK_CHARS], keep_blank_values=False)
    kept = [(k, v) for k, v in pairs if k in names]
    return urlencode(kept)
