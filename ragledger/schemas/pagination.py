"""fastapi-pagination's numbered page, with a page number the database can offset by."""

from __future__ import annotations

from fastapi import Query
from fastapi_pagination import Page as NumberedPage
from fastapi_pagination import Params

MAX_SIZE = 100
# OFFSET is a bigint: (page - 1) * size must stay below 2**63 at the largest size, or
# the query fails in the driver (a 500) instead of answering an empty page.
MAX_PAGE = (2**63 - 1) // MAX_SIZE


class PageParams(Params):
    """Page number and size; a page past the last one is empty, not an error."""

    page: int = Query(1, ge=1, le=MAX_PAGE, description="Page number")
    size: int = Query(50, ge=1, le=MAX_SIZE, description="Page size")


class Page[T](NumberedPage[T]):
    """A numbered page of items with the total (fastapi-pagination's `Page`)."""

    __params_type__ = PageParams
