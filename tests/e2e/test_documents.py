"""Documents over HTTP: upload, ingestion by the reactor, versions, retraction, access."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from sqlalchemy import text

from ragledger.api.app_services import app_services, install_app_services
from ragledger.events import store
from ragledger.projections.registry import all_subscribers
from ragledger.projections.runner import reset_projection, run_until_caught_up
from tests import fixtures_documents as docs


async def drain(db, settings) -> None:
    """Run every subscriber until none has anything left (reactors append more events)."""
    subscribers = all_subscribers(settings)
    while True:
        async with db.sessionmaker() as session:
            head_before = (await store.head(session)).position
        for subscriber in subscribers:
            assert await run_until_caught_up(db.engine, subscriber)
        async with db.sessionmaker() as session:
            if (await store.head(session)).position == head_before:
                return


async def upload(
    client,
    account,
    content: bytes,
    name: str,
    groups=(),
    title=None,
    path="/api/v1/documents",
    public=False,
):
    data: dict = {"access_groups": list(groups)} if groups else {}
    if title:
        data["title"] = title
    if public:
        data["public"] = "true"
    return await client.post(
        path,
        headers=account.headers,
        files={"file": (name, content, "application/octet-stream")},
        data=data,
    )


async def _scalar(db, sql: str, **params):
    async with db.engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def _events(db, event_type: str) -> list:
    async with db.sessionmaker() as session:
        return await store.read_all(session, event_types={event_type}, limit=10_000)


@pytest.mark.parametrize(
    ("name", "make", "content_type", "expected_text"),
    [
        ("policy.pdf", docs.pdf_bytes, "application/pdf", "full-disk encryption"),
        (
            "handbook.docx",
            docs.docx_bytes,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            None,
        ),
        ("page.html", docs.html_bytes, "text/html", None),
        ("onboarding.md", docs.markdown_bytes, "text/markdown", "Bring your ID."),
        ("hours.txt", docs.plain_text_bytes, "text/plain", "Visitors sign in at reception."),
    ],
)
async def test_each_format_is_ingested_and_searchable(
    db, settings, client, accounts, name, make, content_type, expected_text
) -> None:
    response = await upload(client, accounts["admin"], make(), name, groups=["hr"])
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["version"], body["status"], body["content_type"]) == (1, "pending", content_type)
    await drain(db, settings)

    detail = await client.get(
        f"/api/v1/documents/{body['document_id']}", headers=accounts["admin"].headers
    )
    assert detail.status_code == 200
    document = detail.json()
    assert document["status"] == "indexed", document
    assert document["chunk_count"] > 0
    assert document["filename"] == name
    assert document["versions"][0]["status"] == "indexed"
    rows = await _scalar(
        db,
        "SELECT count(*) FROM chunks WHERE document_id = :d AND searchable "
        "AND embedding IS NOT NULL AND access_groups = '{hr}'",
        d=uuid.UUID(body["document_id"]),
    )
    assert rows == document["chunk_count"]
    if expected_text:
        found = await _scalar(
            db,
            "SELECT count(*) FROM chunks WHERE document_id = :d AND text LIKE :t",
            d=uuid.UUID(body["document_id"]),
            t=f"%{expected_text}%",
        )
        assert found >= 1
    [embedded] = await _events(db, "ChunksEmbedded")
    assert embedded.payload["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(embedded.payload["model_sha256"]) == 64
    assert embedded.payload["dimensions"] == 384


async def test_headings_are_kept_as_chunk_heading_paths(db, settings, client, accounts) -> None:
    response = await upload(client, accounts["admin"], docs.markdown_bytes(), "onboarding.md")
    await drain(db, settings)
    paths = await _scalar(
        db,
        "SELECT array_agg(array_to_string(heading_path, ' > ') ORDER BY chunk_index) FROM chunks "
        "WHERE document_id = :d",
        d=uuid.UUID(response.json()["document_id"]),
    )
    assert any("Onboarding > First day" in p for p in paths)
    assert any(p.startswith("Offboarding") for p in paths)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("secret.pdf", docs.encrypted_pdf_bytes, "encrypted"),
        ("broken.pdf", docs.corrupt_pdf_bytes, "corrupt"),
        ("broken.docx", docs.corrupt_docx_missing_document_bytes, "DOCX"),
        ("bomb.docx", docs.docx_zip_bomb, "decompress"),
        ("blank.pdf", docs.blank_pdf_bytes, "no text"),
    ],
)
async def test_bad_documents_fail_with_a_reason_and_leave_nothing_searchable(
    db, settings, client, accounts, name, make, reason
) -> None:
    response = await upload(client, accounts["admin"], make(), name)
    assert response.status_code == 202, response.text
    await drain(db, settings)
    document = (
        await client.get(
            f"/api/v1/documents/{response.json()['document_id']}", headers=accounts["admin"].headers
        )
    ).json()
    assert document["status"] == "failed"
    assert reason.lower() in document["failure_reason"].lower()
    assert await _scalar(db, "SELECT count(*) FROM chunks") == 0
    [failed] = await _events(db, "DocumentIngestionFailed")
    assert failed.payload["reason"] == document["failure_reason"]


@pytest.mark.parametrize(
    ("content", "name", "status", "detail"),
    [
        (docs.png_bytes(), "photo.pdf", 415, None),
        (docs.exe_bytes(), "tool.txt", 415, None),
        (b"", "empty.txt", 422, "the file is empty"),
    ],
    ids=["png-named-pdf", "exe-named-txt", "empty"],
)
async def test_refused_uploads_store_nothing(
    db, client, accounts, content, name, status, detail
) -> None:
    response = await upload(client, accounts["admin"], content, name)
    assert response.status_code == status, response.text
    if detail:
        assert response.json()["detail"] == detail
    assert await _scalar(db, "SELECT count(*) FROM blobs") == 0
    assert await _events(db, "DocumentUploaded") == []


async def test_oversized_upload_is_413(db, settings, client, accounts, app) -> None:
    smaller = settings.model_copy(update={"max_upload_bytes": 2048})
    install_app_services(app, dataclasses.replace(app_services(app), settings=smaller))
    response = await upload(client, accounts["admin"], b"x" * 4096, "big.txt")
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["detail"]
    assert await _scalar(db, "SELECT count(*) FROM blobs") == 0


async def test_filenames_are_sanitized_and_the_original_kept_as_data(
    db, settings, client, accounts
) -> None:
    response = await upload(
        client, accounts["admin"], docs.plain_text_bytes(), "../../etc/pass\x07wd.txt"
    )
    assert response.status_code == 202
    await drain(db, settings)
    document = (
        await client.get(
            f"/api/v1/documents/{response.json()['document_id']}", headers=accounts["admin"].headers
        )
    ).json()
    assert "/" not in document["filename"]
    assert "\x07" not in document["filename"]
    assert not document["filename"].startswith(".")
    [uploaded] = await _events(db, "DocumentUploaded")
    # httpx percent-encodes the control character in the multipart header; the server
    # keeps whatever name it was given, as data only.
    assert uploaded.payload["original_filename"].startswith("../../etc/pass")


async def test_nul_bytes_and_invalid_utf8_are_cleaned_before_anything_is_written(
    db, settings, client, accounts
) -> None:
    content = b"Expense rules\n\nTaxis are re\x00imbursed after 22:00 \xff\xfe only.\n"
    response = await upload(client, accounts["admin"], content, "rules.txt")
    assert response.status_code == 202, response.text
    await drain(db, settings)
    chunk_text = await _scalar(db, "SELECT string_agg(text, ' ') FROM chunks")
    assert "\x00" not in chunk_text
    assert "reimbursed" in chunk_text


async def test_duplicate_uploads_reuse_the_blob_and_are_both_recorded(db, client, accounts) -> None:
    first = await upload(client, accounts["admin"], docs.plain_text_bytes(), "a.txt")
    second = await upload(client, accounts["admin"], docs.plain_text_bytes(), "b.txt")
    assert first.json()["blob_sha256"] == second.json()["blob_sha256"]
    assert first.json()["document_id"] != second.json()["document_id"]
    assert await _scalar(db, "SELECT count(*) FROM blobs") == 1
    assert len(await _events(db, "DocumentUploaded")) == 2


async def test_new_version_replaces_the_old_one_in_retrieval(
    db, settings, client, accounts
) -> None:
    admin = accounts["admin"]
    first = await upload(
        client, admin, b"Leave policy\n\nEmployees get 25 days of leave.\n", "leave.txt"
    )
    document_id = first.json()["document_id"]
    await drain(db, settings)
    second = await upload(
        client,
        admin,
        b"Leave policy\n\nEmployees get 30 days of leave.\n",
        "leave-2027.txt",
        path=f"/api/v1/documents/{document_id}/versions",
    )
    assert second.status_code == 202
    assert second.json()["version"] == 2
    await drain(db, settings)
    searchable = await _scalar(
        db,
        "SELECT array_agg(DISTINCT version) FROM chunks WHERE document_id = :d AND searchable",
        d=uuid.UUID(document_id),
    )
    assert searchable == [2]
    # The old version's chunks stay (not searchable), and its events stay in the ledger.
    assert await _scalar(db, "SELECT count(*) FROM chunks WHERE version = 1") >= 1
    detail = (await client.get(f"/api/v1/documents/{document_id}", headers=admin.headers)).json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert detail["current_version"] == 2
    assert detail["filename"] == "leave-2027.txt"
    unknown = await upload(
        client, admin, b"text", "x.txt", path=f"/api/v1/documents/{uuid.uuid4()}/versions"
    )
    assert unknown.status_code == 404


async def test_retraction_hides_the_document_but_keeps_the_ledger(
    db, settings, client, accounts
) -> None:
    admin, employee = accounts["admin"], accounts["employee"]
    response = await upload(client, admin, docs.plain_text_bytes(), "hours.txt")
    document_id = response.json()["document_id"]
    await drain(db, settings)
    assert (
        await client.delete(f"/api/v1/documents/{document_id}", headers=admin.headers)
    ).status_code == 204
    again = await client.delete(f"/api/v1/documents/{document_id}", headers=admin.headers)
    assert again.status_code == 409
    await drain(db, settings)
    assert (
        await client.get(f"/api/v1/documents/{document_id}", headers=employee.headers)
    ).status_code == 404
    listing = (await client.get("/api/v1/documents", headers=employee.headers)).json()
    assert listing["total"] == 0
    retracted = (
        await client.get("/api/v1/documents", headers=admin.headers, params={"status": "retracted"})
    ).json()
    assert [d["document_id"] for d in retracted["items"]] == [document_id]
    assert await _scalar(db, "SELECT count(*) FROM chunks WHERE searchable") == 0
    assert len(await _events(db, "DocumentUploaded")) == 1
    assert len(await _events(db, "DocumentRetracted")) == 1


async def test_access_groups_restrict_listings_and_follow_changes(
    db, settings, client, accounts
) -> None:
    admin, employee = accounts["admin"], accounts["employee"]  # employee is in "hr"
    public = (
        await upload(client, admin, b"Canteen menu\n\nSoup on Monday.\n", "menu.txt", public=True)
    ).json()
    # No groups and not public: admins and auditors only (fail closed).
    closed = (await upload(client, admin, b"Board notes\n\nMerger.\n", "board.txt")).json()
    hr = (
        await upload(client, admin, b"Salary bands\n\nBand A.\n", "bands.txt", groups=["hr"])
    ).json()
    finance = (
        await upload(client, admin, b"Budget\n\nQ3 numbers.\n", "budget.txt", groups=["finance"])
    ).json()
    await drain(db, settings)

    seen = (await client.get("/api/v1/documents", headers=employee.headers)).json()
    assert {d["document_id"] for d in seen["items"]} == {public["document_id"], hr["document_id"]}
    assert (
        await client.get(f"/api/v1/documents/{finance['document_id']}", headers=employee.headers)
    ).status_code == 404
    assert (
        await client.get(f"/api/v1/documents/{closed['document_id']}", headers=employee.headers)
    ).status_code == 404
    everything = (await client.get("/api/v1/documents", headers=accounts["auditor"].headers)).json()
    assert everything["total"] == 4
    only_hr = (
        await client.get("/api/v1/documents", headers=admin.headers, params={"group": "hr"})
    ).json()
    assert [d["document_id"] for d in only_hr["items"]] == [hr["document_id"]]

    changed = await client.patch(
        f"/api/v1/documents/{hr['document_id']}",
        headers=admin.headers,
        json={"access_groups": ["Finance"]},
    )
    assert changed.status_code == 200
    assert changed.json()["access_groups"] == ["finance"]
    # Honoured at once, before the projections run.
    seen = (await client.get("/api/v1/documents", headers=employee.headers)).json()
    assert {d["document_id"] for d in seen["items"]} == {public["document_id"]}
    await drain(db, settings)
    seen = (await client.get("/api/v1/documents", headers=employee.headers)).json()
    assert {d["document_id"] for d in seen["items"]} == {public["document_id"]}
    groups = await _scalar(
        db,
        "SELECT array_agg(DISTINCT g) FROM chunks, unnest(access_groups) g WHERE document_id = :d",
        d=uuid.UUID(hr["document_id"]),
    )
    assert groups == ["finance"]
    bad = await client.patch(
        f"/api/v1/documents/{hr['document_id']}",
        headers=admin.headers,
        json={"access_groups": ["a b"], "x": 1},
    )
    assert bad.status_code == 422


async def test_a_nul_in_the_group_filter_is_422(client, accounts) -> None:
    # Found by tests/e2e/test_schema_fuzz.py: the NUL reached PostgreSQL, which refused
    # it (a 500). Validation refuses it now, like any malformed query parameter.
    response = await client.get(
        "/api/v1/documents", headers=accounts["employee"].headers, params={"group": "h\x00r"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "group"]


async def test_rebuild_reproduces_the_catalog_and_the_index_without_embedding(
    db, settings, client, accounts
) -> None:
    admin = accounts["admin"]
    first = (
        await upload(client, admin, docs.markdown_bytes(), "onboarding.md", groups=["hr"])
    ).json()
    await upload(client, admin, docs.pdf_bytes(), "policy.pdf")
    await upload(client, admin, docs.encrypted_pdf_bytes(), "secret.pdf")
    await drain(db, settings)
    await upload(
        client,
        admin,
        docs.plain_text_bytes(),
        "v2.txt",
        path=f"/api/v1/documents/{first['document_id']}/versions",
    )
    await drain(db, settings)
    await client.patch(
        f"/api/v1/documents/{first['document_id']}",
        headers=admin.headers,
        json={"access_groups": []},
    )
    await drain(db, settings)

    snapshot_sql = {
        "chunks": "SELECT chunk_id, document_id, version, chunk_index, title, heading_path, "
        "text, text_sha256, start_offset, end_offset, token_count, embedding::text, tsv::text, "
        "access_groups, searchable FROM chunks ORDER BY chunk_id",
        "documents": "SELECT * FROM documents ORDER BY document_id",
        "versions": "SELECT * FROM document_versions ORDER BY document_id, version",
    }

    async def snapshot() -> dict:
        async with db.engine.connect() as conn:
            return {
                k: [tuple(r) for r in await conn.execute(text(q))] for k, q in snapshot_sql.items()
            }

    live = await snapshot()
    embedded_before = len(await _events(db, "ChunksEmbedded"))
    by_name = {s.name: s for s in all_subscribers(settings)}
    for name in ("chunks", "documents"):
        await reset_projection(db.engine, by_name[name])
        assert await run_until_caught_up(db.engine, by_name[name], batch_size=3)
    assert await snapshot() == live
    assert len(await _events(db, "ChunksEmbedded")) == embedded_before
    assert live["chunks"], "the index was not empty"


async def test_upload_rate_limit(db, settings, accounts) -> None:
    import httpx

    from ragledger.api.app import create_app
    from tests.e2e.conftest import login

    tight = settings.model_copy(update={"rate_limit_upload_per_user": "2/minute"})
    app = create_app(tight, run_subscribers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
    ):
        await login(client, accounts["admin"])
        statuses = [
            (await upload(client, accounts["admin"], b"note %d\n" % i, "n.txt")).status_code
            for i in range(3)
        ]
    assert statuses == [202, 202, 429]
    [event] = await _events(db, "RateLimitExceeded")
    assert event.payload["scope"] == "upload"
    assert event.payload["user_id"] == str(accounts["admin"].id)


async def test_indexed_is_reported_only_once_the_chunks_are_searchable(
    db, settings, client, accounts
) -> None:
    """The documents projection may apply DocumentIndexed before the chunks projection."""
    from ragledger.projections.chunks import ChunksProjection
    from ragledger.projections.documents import DocumentsProjection
    from ragledger.projections.ingestion import IngestionReactor
    from ragledger.projections.runner import run_until_caught_up

    admin = accounts["admin"].headers
    response = await upload(client, accounts["admin"], docs.markdown_bytes(), "onboarding.md")
    document_id = response.json()["document_id"]
    assert await run_until_caught_up(db.engine, IngestionReactor(settings))
    assert await run_until_caught_up(db.engine, DocumentsProjection())
    # DocumentIndexed is projected into the catalog, not yet into the chunks.
    assert await _scalar(db, "SELECT status FROM documents") == "indexed"
    detail = (await client.get(f"/api/v1/documents/{document_id}", headers=admin)).json()
    assert detail["status"] == "pending"
    assert detail["versions"][0]["status"] == "pending"
    listed = await client.get("/api/v1/documents?status=indexed", headers=admin)
    assert listed.json()["items"] == []
    pending = await client.get("/api/v1/documents?status=pending", headers=admin)
    assert [d["status"] for d in pending.json()["items"]] == ["pending"]

    assert await run_until_caught_up(db.engine, ChunksProjection())
    detail = (await client.get(f"/api/v1/documents/{document_id}", headers=admin)).json()
    assert detail["status"] == "indexed"
    assert detail["versions"][0]["status"] == "indexed"
    listed = await client.get("/api/v1/documents?status=indexed", headers=admin)
    assert [d["document_id"] for d in listed.json()["items"]] == [document_id]
    await drain(db, settings)
