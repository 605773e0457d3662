"""Anomalies for admins: the list, and acknowledging one."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request
from fastapi_pagination.ext.sqlalchemy import apaginate

from ragledger.api.deps import NO_NUL, AdminUser, SessionDep
from ragledger.api.errors import BODY_ERRORS, error_responses
from ragledger.api.request_context import event_metadata
from ragledger.events.anomaly_kinds import Rule, Severity
from ragledger.schemas.anomalies import (
    AnomalyAcknowledge,
    AnomalyAcknowledgementPublic,
    AnomalyPublic,
)
from ragledger.schemas.pagination import Page
from ragledger.services import anomalies as anomalies_service

router = APIRouter(prefix="/admin/anomalies", tags=["admin"], responses=error_responses(401, 403))


@router.get("", response_model=Page[AnomalyPublic], responses=error_responses(422))
async def list_anomalies(
    session: SessionDep,
    _admin: AdminUser,
    rule: Rule | None = None,
    severity: Severity | None = None,
    acknowledged: bool | None = None,
    subject: str | None = Query(
        default=None, max_length=300, pattern=NO_NUL, description="Exact match."
    ),
) -> Page[AnomalyPublic]:
    """List anomalies, newest first, by rule, severity, acknowledgement or subject (admin)."""
    query = anomalies_service.inbox_query(
        rule=rule.value if rule is not None else None,
        severity=severity.value if severity is not None else None,
        acknowledged=acknowledged,
        subject=subject,
    )
    return await apaginate(session, query)


@router.post(
    "/{anomaly_id}/acknowledge",
    response_model=AnomalyAcknowledgementPublic,
    responses=error_responses(
        *BODY_ERRORS, described={404: "Unknown anomaly", 409: "Already acknowledged"}
    ),
)
async def acknowledge_anomaly(
    request: Request,
    anomaly_id: uuid.UUID,
    session: SessionDep,
    admin: AdminUser,
    body: AnomalyAcknowledge | None = None,
) -> AnomalyAcknowledgementPublic:
    """Acknowledge an anomaly, optionally with a note (admin)."""
    done = await anomalies_service.acknowledge_anomaly(
        session,
        anomaly_id=anomaly_id,
        actor_id=admin.id,
        note=body.note if body is not None else None,
        metadata=event_metadata(request, admin),
    )
    return AnomalyAcknowledgementPublic.model_validate(done)
