"""`ragledger audit`: the ledger export, an answer's receipt, and the witness."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from ragledger.cli._common import cli_metadata, command_settings, fail, with_database
from ragledger.core.runtime import Database

WITNESS_EXIT_ALARM = 1
WITNESS_EXIT_UNREACHABLE = 2

audit_app = typer.Typer(help="Exports for auditors.", no_args_is_help=True)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="File to write the JSON Lines to.")],
    from_position: Annotated[int | None, typer.Option("--from", min=1)] = None,
    to_position: Annotated[int | None, typer.Option("--to", min=1)] = None,
) -> None:
    """Export the ledger as JSON Lines ending with a signed digest (as GET /audit/export)."""
    from ragledger.services.errors import DomainError
    from ragledger.services.ledger_audit import export_lines, export_range
    from ragledger.services.signing import DigestSigner

    settings = command_settings()

    async def work(database: Database) -> int:
        signer = DigestSigner.from_settings(settings)
        async with database.sessionmaker() as session:
            first, last = await export_range(session, from_position, to_position)
        count = 0
        with out.open("w", encoding="utf-8") as handle:
            async for line in export_lines(
                database.sessionmaker, signer, first=first, last=last, metadata=cli_metadata()
            ):
                handle.write(line)
                count += 1
        typer.echo(
            f"exported positions {first}..{last} to {out}; public key {signer.public_key_b64()}"
        )
        return count

    try:
        with_database(work)
    except DomainError as exc:
        fail(f"error: {exc.detail}")


@audit_app.command("receipt")
def audit_receipt(
    answer_id: Annotated[uuid.UUID, typer.Argument(help="The answer (question) id.")],
    out: Annotated[Path, typer.Option(help="File to write the receipt (JSON) to.")],
) -> None:
    """Write an answer's receipt (as GET /answers/{id}/receipt, read as an operator)."""
    from ragledger.services.documents import Reader
    from ragledger.services.errors import DomainError
    from ragledger.services.receipts import build_receipt
    from ragledger.services.signing import DigestSigner

    settings = command_settings()

    async def work(database: Database) -> dict[str, Any]:
        signer = DigestSigner.from_settings(settings)
        async with database.sessionmaker() as session:
            receipt = await build_receipt(
                session,
                signer,
                answer_id=answer_id,
                reader=Reader(user_id=None, role="admin", groups=()),
                metadata=cli_metadata(),
            )
            await session.commit()
            return receipt

    try:
        receipt = with_database(work)
    except DomainError as exc:
        fail(f"error: {exc.detail}")
    out.write_text(json.dumps(receipt, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    head = receipt["tree_head"]
    typer.echo(
        f"receipt of {answer_id}: {len(receipt['events'])} events in the tree of "
        f"{head['tree_size']} signed by key {head['key_id']}; written to {out}. Check it with "
        f"python3 -I ops/verify_receipt.py {out} {receipt['public_key']}"
    )


def _get(client: httpx.Client, path: str, **params: int) -> dict[str, Any]:
    response = client.get(path, params=params)
    if response.status_code != 200:
        raise typer.Exit(
            _unreachable(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        )
    return response.json()


def _unreachable(message: str) -> int:
    typer.echo(f"witness: cannot check: {message}", err=True)
    return WITNESS_EXIT_UNREACHABLE


@audit_app.command("witness")
def audit_witness(
    url: Annotated[str, typer.Option(help="The server's base URL, e.g. https://rag.example")],
    state: Annotated[Path, typer.Option(help="JSON file holding the last head seen and key")],
    token: Annotated[str | None, typer.Option(help="An auditor's bearer token.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the token.")] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="The server's public key (base64 raw or PEM); else pinned at first run"),
    ] = None,
) -> None:
    """Check that the newest signed tree head extends the one kept in --state; keep it.

    Exit 0 when it does, 1 on a bad signature, a shrunken tree, a fork or a rewrite (the
    state file is left as it was, as evidence), 2 when the server cannot be asked.
    """
    from ragledger.services.signing import key_id, load_public_key
    from ragledger.services.witness import (
        KeptHead,
        WitnessAlarmError,
        check_extends,
        check_signature,
    )

    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
    token = token or os.environ.get("RAGLEDGER_TOKEN")
    if not token:
        raise typer.Exit(_unreachable("no token: pass --token, --token-file or RAGLEDGER_TOKEN"))
    kept_state: dict[str, Any] = {}
    if state.exists():
        kept_state = json.loads(state.read_text(encoding="utf-8"))
    headers = {"Authorization": f"Bearer {token}"}
    base = url.rstrip("/") + "/api/v1/audit"
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            key_text = public_key or kept_state.get("public_key")
            if key_text is None:
                key_text = _get(client, "/public-key")["public_key"]
            key = load_public_key(key_text)
            new = KeptHead.from_json(_get(client, "/tree-heads/latest"))
            kept = KeptHead.from_json(kept_state["head"]) if "head" in kept_state else None
            proof: list[str] = []
            if kept is not None and kept.tree_size < new.tree_size:
                proof = _get(
                    client, "/proofs/consistency", first=kept.tree_size, second=new.tree_size
                )["proof"]
    except httpx.HTTPError as exc:
        raise typer.Exit(_unreachable(f"{url}: {exc!r}")) from None
    try:
        check_signature(new, key)
        if kept is not None:
            check_extends(kept, new, proof)
    except WitnessAlarmError as alarm:
        typer.echo(f"witness: ALARM {alarm.kind.upper()}: {alarm.detail}", err=True)
        raise typer.Exit(WITNESS_EXIT_ALARM) from None
    fresh = {"url": url, "public_key": key_text, "key_id": key_id(key), "head": new.to_json()}
    temporary = state.with_name(state.name + ".tmp")
    temporary.write_text(json.dumps(fresh, indent=1) + "\n", encoding="utf-8")
    temporary.replace(state)
    if kept is None:
        typer.echo(f"witness: first head kept: {new.tree_size} events, root {new.root_hash}")
    else:
        typer.echo(
            f"witness: ok: {new.tree_size} events (signed {new.signed_at}) extend the "
            f"{kept.tree_size} kept (signed {kept.signed_at})"
        )
