"""Console pages (audit_answers)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
