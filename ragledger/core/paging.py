"""Page sizes of the paginated audit views, shared by their queries and HTTP schemas."""

from __future__ import annotations

# 500 items of a few kilobytes each keeps a page under a few megabytes; more than that
# is an export, which has its own route.
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
