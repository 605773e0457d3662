"""Receipts, tree heads, proofs and the witness over real HTTP (uvicorn on loopback).

The receipt is checked by ops/verify_receipt.py in a subprocess under `python -I`; the
witness is the `ragledger` command in a subprocess, as an auditor would run it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ragledger.events.merkle import leaf_hash, verify_consistency, verify_inclusion
from ragledger.projections.merkle_tree import MerkleTreeProjection
from ragledger.projections.runner import reset_projection, run_until_caught_up
from tests.e2e import test_questions
from tests.e2e.test_documents import drain
from tests.e2e.test_questions import ANSWER, LEAVE, ask, upload
from tests.ledger_tampering import rewrite_and_rechain

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "ops" / "verify_receipt.py"
RAGLEDGER = str(Path(sys.executable).parent / "ragledger")

# The uvicorn-served app, its client and accounts, as in the question tests.
llm_settings = test_questions.llm_settings
base_url = test_questions.base_url
http = test_questions.http
people = test_questions.people


async def _verify(receipt_path: Path, key: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-I", str(VERIFIER), str(receipt_path), key],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _public_key(http, auditor) -> str:
    response = await http.get("/api/v1/audit/public-key", headers=auditor.headers)
    assert response.status_code == 200
    return response.json()["public_key"]


async def _tree(db) -> None:
    assert await run_until_caught_up(db.engine, MerkleTreeProjection())


async def test_a_receipt_fetched_over_http_verifies_offline(
    db, database_url, llm_settings, http, people, fake_openai, tmp_path: Path
) -> None:
    fake_openai.chat.answer = ANSWER
    document_id = await upload(http, people["admin"], LEAVE, "leave.md", groups=["hr"])
    await drain(db, llm_settings)
    question = "How many days of annual leave do employees get?"
    events = await ask(http, people["hr"], question)
    done = dict(events)["done"]
    answer_id = done["answer_id"]
    assert done["receipt_url"] == f"/api/v1/answers/{answer_id}/receipt"
    await _tree(db)

    assert (await http.get(done["receipt_url"], headers=people["sales"].headers)).status_code == 403
    response = await http.get(done["receipt_url"], headers=people["hr"].headers)
    assert response.status_code == 200, response.text
    receipt = response.json()
    kinds = [e["event_type"] for e in receipt["events"]]
    assert kinds == ["DocumentChunked", "QuestionAsked", "ContextRetrieved", "AnswerGenerated"]
    assert not any(e["withheld"] for e in receipt["events"])
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt), encoding="utf-8")
    key = await _public_key(http, people["auditor"])

    checked = await _verify(path, key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("valid: bytes -> hash -> leaf -> inclusion proof")
    assert repr(question) in checked.stdout
    assert f"document {document_id} version 1" in checked.stdout
    assert "(text matches)" in checked.stdout
    assert ANSWER in checked.stdout

    # The head was signed for this receipt; a second receipt reuses it.
    again = (await http.get(done["receipt_url"], headers=people["hr"].headers)).json()
    assert again["tree_head"] == receipt["tree_head"]

    # The same receipt from the command line, on the server, verifies too.
    by_cli = tmp_path / "cli-receipt.json"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        DATABASE_URL=database_url,
        RAGLEDGER_DATA_DIR=str(llm_settings.data_dir),
        LOG_FORMAT="json",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    written = await asyncio.to_thread(
        subprocess.run,
        [RAGLEDGER, "audit", "receipt", answer_id, "--out", str(by_cli)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert written.returncode == 0, written.stderr
    assert json.loads(by_cli.read_text())["tree_head"] == receipt["tree_head"]
    assert (await _verify(by_cli, key)).returncode == 0

    # Each link of the chain of checks, broken in turn, is named.
    answer_event = receipt["events"][-1]
    forged = json.loads(json.dumps(receipt))
    forged["events"][-1]["canonical"] = answer_event["canonical"].replace("thirty", "ninety")
    path.write_text(json.dumps(forged), encoding="utf-8")
    failed = await _verify(path, key)
    assert failed.returncode == 1
    assert "INVALID: bytes -> hash: event at position" in failed.stdout

    forged = json.loads(json.dumps(receipt))
    proof = forged["events"][0]["inclusion_proof"]
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
    path.write_text(json.dumps(forged), encoding="utf-8")
    failed = await _verify(path, key)
    assert failed.returncode == 1
    assert "INVALID: leaf -> root: event at position" in failed.stdout

    forged = json.loads(json.dumps(receipt))
    forged["tree_head"]["signed_at"] = "2020-01-01T00:00:00.000000Z"
    path.write_text(json.dumps(forged), encoding="utf-8")
    failed = await _verify(path, key)
    assert failed.returncode == 1
    assert "INVALID: signature: the tree head's Ed25519 signature is not valid" in failed.stdout

    stranger = Ed25519PrivateKey.generate().public_key()
    stranger_key = base64.b64encode(
        stranger.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    path.write_text(json.dumps(receipt), encoding="utf-8")
    failed = await _verify(path, stranger_key)
    assert failed.returncode == 1
    assert "INVALID: signature: the tree head names key" in failed.stdout

    # Access moves away: the chunk text is withheld, its hash still proved.
    moved = await http.patch(
        f"/api/v1/documents/{document_id}",
        headers=people["admin"].headers,
        json={"access_groups": ["finance"]},
    )
    assert moved.status_code == 200
    await drain(db, llm_settings)  # the documents projection holds access here
    withheld = (await http.get(done["receipt_url"], headers=people["hr"].headers)).json()
    chunked = withheld["events"][0]
    assert chunked["withheld"] is True
    assert chunked["canonical"] is None
    assert "thirty days" not in json.dumps(withheld["events"][0])
    assert any("withheld" in note for note in withheld["notes"])
    path.write_text(json.dumps(withheld), encoding="utf-8")
    checked = await _verify(path, key)
    assert checked.returncode == 0, checked.stdout
    assert "DocumentChunked: withheld" in checked.stdout
    assert "(text not in the receipt)" in checked.stdout


async def test_proof_routes_answer_verifiable_proofs_and_clear_errors(db, http, people) -> None:
    auditor = people["auditor"].headers
    latest = await http.get("/api/v1/audit/tree-heads/latest", headers=auditor)
    assert latest.status_code == 404
    await _tree(db)
    signed = await http.post("/api/v1/audit/tree-heads", headers=auditor)
    assert signed.status_code == 201, signed.text
    head = signed.json()
    assert head["purpose"] == "requested"
    latest = await http.get("/api/v1/audit/tree-heads/latest", headers=auditor)
    assert latest.json() == head
    size = head["tree_size"]
    inclusion = await http.get(
        "/api/v1/audit/proofs/inclusion", params={"position": 1, "tree_size": size}, headers=auditor
    )
    assert inclusion.status_code == 200
    body = inclusion.json()
    assert body["root_hash"] == head["root_hash"]
    verify_inclusion(
        index=0,
        size=size,
        leaf=bytes.fromhex(body["leaf_hash"]),
        proof=[bytes.fromhex(p) for p in body["proof"]],
        root=bytes.fromhex(head["root_hash"]),
    )
    await _tree(db)  # the head's own event is a leaf now
    later = await http.post("/api/v1/audit/tree-heads", headers=auditor)
    second = later.json()
    consistency = await http.get(
        "/api/v1/audit/proofs/consistency",
        params={"first": size, "second": second["tree_size"]},
        headers=auditor,
    )
    assert consistency.status_code == 200
    verify_consistency(
        first=size,
        second=second["tree_size"],
        first_root=bytes.fromhex(head["root_hash"]),
        second_root=bytes.fromhex(second["root_hash"]),
        proof=[bytes.fromhex(p) for p in consistency.json()["proof"]],
    )
    page = await http.get("/api/v1/audit/tree-heads", params={"size": 1}, headers=auditor)
    assert [h["tree_size"] for h in page.json()["items"]] == [second["tree_size"]]
    rest = await http.get(
        "/api/v1/audit/tree-heads",
        params={"size": 1, "before": page.json()["next_before"]},
        headers=auditor,
    )
    assert [h["tree_size"] for h in rest.json()["items"]] == [size]

    async def status(path: str, **params: int) -> tuple[int, str]:
        response = await http.get(path, params=params, headers=auditor)
        return response.status_code, response.json().get("detail", "")

    code, detail = await status("/api/v1/audit/proofs/inclusion", position=size + 1, tree_size=size)
    assert code == 400
    assert "not in a tree" in detail
    code, detail = await status("/api/v1/audit/proofs/inclusion", position=1, tree_size=10**6)
    assert code == 409
    assert "retry" in detail
    code, _ = await status("/api/v1/audit/proofs/consistency", first=3, second=2)
    assert code == 400
    code, _ = await status("/api/v1/audit/proofs/consistency", first=0, second=2)
    assert code == 422
    code, _ = await status("/api/v1/audit/proofs/inclusion", position=1)
    assert code == 422
    employee = await http.get("/api/v1/audit/tree-heads/latest", headers=people["hr"].headers)
    assert employee.status_code == 403
    assert leaf_hash(b"") != bytes.fromhex(body["leaf_hash"])


async def _witness(url: str, state: Path, token_file: Path, *extra: str):
    return await asyncio.to_thread(
        subprocess.run,
        [
            RAGLEDGER,
            "audit",
            "witness",
            "--url",
            url,
            "--state",
            str(state),
            "--token-file",
            str(token_file),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_witness_keeps_heads_and_alarms_on_a_rewrite(
    db, base_url, http, people, tmp_path: Path
) -> None:
    auditor = people["auditor"]
    token_file = tmp_path / "token"
    token_file.write_text(auditor.token or "", encoding="utf-8")
    state = tmp_path / "witness.json"

    await _tree(db)
    assert (await http.post("/api/v1/audit/tree-heads", headers=auditor.headers)).status_code == 201
    first = await _witness(base_url, state, token_file)
    assert first.returncode == 0, first.stderr
    assert "first head kept" in first.stdout
    kept = json.loads(state.read_text())

    await _tree(db)
    assert (await http.post("/api/v1/audit/tree-heads", headers=auditor.headers)).status_code == 201
    grown = await _witness(base_url, state, token_file)
    assert grown.returncode == 0, grown.stderr
    assert "witness: ok:" in grown.stdout
    kept = json.loads(state.read_text())

    # A key the server does not sign with: the head's signature does not check.
    other = Ed25519PrivateKey.generate().public_key()
    other_key = base64.b64encode(
        other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    wrong_key = await _witness(
        base_url, tmp_path / "other.json", token_file, "--public-key", other_key
    )
    assert wrong_key.returncode == 1
    assert "ALARM BAD_SIGNATURE" in wrong_key.stderr

    # A superuser rewrites an early event, recomputes the chain and rebuilds the tree.
    await rewrite_and_rechain(db, 2, {"forged": True})
    await reset_projection(db.engine, MerkleTreeProjection())
    await _tree(db)
    assert (await http.post("/api/v1/audit/tree-heads", headers=auditor.headers)).status_code == 201
    alarm = await _witness(base_url, state, token_file)
    assert alarm.returncode == 1
    assert "ALARM REWRITE" in alarm.stderr
    assert f"does not extend the tree of {kept['head']['tree_size']} events" in alarm.stderr
    assert json.loads(state.read_text()) == kept, "the evidence is kept"
