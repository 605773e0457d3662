"""Anomalies end to end: failed logins over HTTP -> detector -> mail on loopback SMTP -> list."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ragledger.events import store
from tests.e2e.test_documents import drain
from tests.fakes.smtp_server import FakeSMTPServer


@pytest.fixture
def smtp() -> Iterator[FakeSMTPServer]:
    with FakeSMTPServer() as server:
        yield server


@pytest.fixture
def settings(settings, smtp: FakeSMTPServer):
    """The shared test settings, with mail going to the fake SMTP server."""
    return settings.model_copy(update=smtp.mail_settings())


async def _anomalies(db) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={"AnomalyDetected"}, limit=1000)


async def test_failed_logins_raise_an_anomaly_that_admins_get_by_mail_and_acknowledge(
    db, client, accounts, settings, smtp: FakeSMTPServer
) -> None:
    employee, admin = accounts["employee"], accounts["admin"]
    for _ in range(settings.anomaly_auth_failures_per_account):
        response = await client.post(
            "/api/v1/auth/jwt/login",
            data={"username": employee.email, "password": "not the password at all"},
        )
        assert response.status_code == 400
    await drain(db, settings)

    (detected,) = await _anomalies(db)
    anomaly = detected.payload
    assert anomaly["rule"] == "repeated_auth_failures"
    assert anomaly["subject"] == f"user:{employee.id}"
    assert anomaly["severity"] == "high"
    assert len(anomaly["evidence_positions"]) == settings.anomaly_auth_failures_per_account

    # The only active admin got exactly one mail about it, as text and HTML.
    (mail,) = smtp.wait_for(1)
    assert mail.rcpt_tos == (admin.email,)
    assert mail.header("X-Ragledger-Anomaly-Id") == anomaly["anomaly_id"]
    assert "repeated_auth_failures" in mail.subject
    assert f"user:{employee.id}" in mail.text
    first_evidence = anomaly["evidence_positions"][0]
    assert f"/api/v1/audit/events?position_from={first_evidence}" in mail.text
    assert "/api/v1/admin/anomalies" in mail.html

    listed = await client.get("/api/v1/admin/anomalies", headers=admin.headers)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == 1
    (item,) = page["items"]
    assert item["anomaly_id"] == anomaly["anomaly_id"]
    assert item["notification_transport"] == "smtp"
    assert item["notified_recipients"] == 1
    assert item["acknowledged"] is False
    assert item["evidence_positions"] == anomaly["evidence_positions"]

    filtered = await client.get(
        "/api/v1/admin/anomalies",
        headers=admin.headers,
        params={"rule": "repeated_auth_failures", "subject": f"user:{employee.id}"},
    )
    assert filtered.json()["total"] == 1
    for params in ({"severity": "low"}, {"acknowledged": "true"}, {"subject": "user:x' OR 1=1"}):
        response = await client.get("/api/v1/admin/anomalies", headers=admin.headers, params=params)
        assert response.status_code == 200, params
        assert response.json()["total"] == 0, params
    bad = await client.get(
        "/api/v1/admin/anomalies", headers=admin.headers, params={"rule": "nope"}
    )
    assert bad.status_code == 422

    # Employees may neither see nor acknowledge anomalies.
    ack_path = f"/api/v1/admin/anomalies/{anomaly['anomaly_id']}/acknowledge"
    denied = await client.get("/api/v1/admin/anomalies", headers=employee.headers)
    assert denied.status_code == 403
    assert (await client.post(ack_path, headers=employee.headers)).status_code == 403

    acked = await client.post(ack_path, headers=admin.headers, json={"note": "called Emma"})
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged_by"] == str(admin.id)
    again = await client.post(ack_path, headers=admin.headers)
    assert again.status_code == 409
    unknown = await client.post(
        f"/api/v1/admin/anomalies/{uuid.uuid4()}/acknowledge", headers=admin.headers
    )
    assert unknown.status_code == 404

    await drain(db, settings)
    (item,) = (await client.get("/api/v1/admin/anomalies", headers=admin.headers)).json()["items"]
    assert item["acknowledged"] is True
    assert item["acknowledged_by"] == str(admin.id)
    assert item["acknowledgement_note"] == "called Emma"
    # The employee's denials continue the same burst: held back, not raised or mailed again.
    assert len(await _anomalies(db)) == 1
    assert len(smtp.messages) == 1


async def test_a_nul_in_the_subject_filter_is_422(client, accounts) -> None:
    # Found by tests/e2e/test_schema_fuzz.py (on the documents' group filter): a NUL
    # reached PostgreSQL, which refused it (a 500). Validation refuses it now.
    response = await client.get(
        "/api/v1/admin/anomalies", headers=accounts["admin"].headers, params={"subject": "\x00"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "subject"]
