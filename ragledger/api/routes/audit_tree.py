"""The Merkle tree for auditors: signed tree heads, inclusion and consistency proofs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from ragledger.api.app_services import app_services
from ragledger.api.deps import AuditorUser, SessionDep
from ragledger.api.errors import error_responses
from ragledger.api.request_context import event_metadata
from ragledger.schemas.ledger_audit import MAX_POSITION, HeadPublic, VerificationPublic
from ragledger.schemas.tree_heads import (
    ConsistencyProofPublic,
    InclusionProofPublic,
    TreeHeadPage,
    TreeHeadPublic,
)
from ragledger.services import tree_heads
from ragledger.services.tree_heads import TreeHead
from ragledger.services.tree_verification import verify_from_tree_head

router = APIRouter(prefix="/audit", tags=["audit"], responses=error_responses(401, 403))

PROOF_ERRORS = error_responses(
    422,
    described={
        400: "A position outside the tree, or sizes in the wrong order",
        409: "The tree has not reached that size yet (retry in a moment)",
    },
)


def head_public(head: TreeHead) -> TreeHeadPublic:
    """The HTTP shape of a head."""
    return TreeHeadPublic(**head.to_json(), position=head.position, purpose=head.purpose)


@router.get("/tree-heads", response_model=TreeHeadPage, responses=error_responses(422))
async def list_tree_heads(
    session: SessionDep,
    _auditor: AuditorUser,
    before: Annotated[int | None, Query(ge=1, le=MAX_POSITION)] = None,
    size: Annotated[int, Query(ge=1, le=100)] = 50,
) -> TreeHeadPage:
    """Signed tree heads, newest first, keyset-paged by ledger position (auditor, admin)."""
    heads = await tree_heads.list_tree_heads(session, before=before, limit=size)
    return TreeHeadPage(
        items=[head_public(h) for h in heads],
        next_before=heads[-1].position if len(heads) == size else None,
    )


@router.get(
    "/tree-heads/latest",
    response_model=TreeHeadPublic,
    responses=error_responses(described={404: "No tree head was signed yet"}),
)
async def latest_tree_head(session: SessionDep, _auditor: AuditorUser) -> TreeHeadPublic:
    """The newest signed tree head (auditor, admin; what a witness fetches)."""
    return head_public(await tree_heads.latest_tree_head(session))


@router.post(
    "/tree-heads",
    response_model=TreeHeadPublic,
    status_code=201,
    responses=error_responses(described={409: "The tree is empty"}),
)
async def sign_tree_head(
    request: Request, session: SessionDep, auditor: AuditorUser
) -> TreeHeadPublic:
    """Sign the Merkle tree's current root now and record TreeHeadSigned (auditor, admin)."""
    head = await tree_heads.sign_tree_head(
        session,
        app_services(request.app).signer,
        purpose="requested",
        metadata=event_metadata(request, auditor),
    )
    return head_public(head)


@router.get("/proofs/inclusion", response_model=InclusionProofPublic, responses=PROOF_ERRORS)
async def inclusion_proof(
    session: SessionDep,
    _auditor: AuditorUser,
    position: Annotated[int, Query(ge=1, le=MAX_POSITION)],
    tree_size: Annotated[int, Query(ge=1, le=MAX_POSITION)],
) -> InclusionProofPublic:
    """The audit path of the event at `position` in the tree of `tree_size` (auditor, admin)."""
    proof = await tree_heads.inclusion_proof(session, position=position, size=tree_size)
    return InclusionProofPublic(
        position=proof.position,
        leaf_index=proof.position - 1,
        tree_size=proof.tree_size,
        leaf_hash=proof.leaf_hash.hex(),
        root_hash=proof.root_hash.hex(),
        proof=[p.hex() for p in proof.proof],
    )


@router.get("/proofs/consistency", response_model=ConsistencyProofPublic, responses=PROOF_ERRORS)
async def consistency_proof(
    session: SessionDep,
    _auditor: AuditorUser,
    first: Annotated[int, Query(ge=1, le=MAX_POSITION)],
    second: Annotated[int, Query(ge=1, le=MAX_POSITION)],
) -> ConsistencyProofPublic:
    """The proof that tree `second` extends tree `first` (auditor, admin)."""
    proof = await tree_heads.consistency_proof(session, first=first, second=second)
    return ConsistencyProofPublic(
        first=proof.first,
        second=proof.second,
        first_root=proof.first_root.hex(),
        second_root=proof.second_root.hex(),
        proof=[p.hex() for p in proof.proof],
    )


@router.get(
    "/verify/from-tree-head",
    response_model=VerificationPublic,
    responses=error_responses(described={409: "The Merkle tree is behind the last signed head"}),
)
async def verify_from_last_tree_head(request: Request, auditor: AuditorUser) -> VerificationPublic:
    """Verify from the last signed tree head: proofs, then the chain after it (auditor, admin)."""
    result, start = await verify_from_tree_head(
        app_services(request.app).database.sessionmaker,
        app_services(request.app).signer,
        metadata=event_metadata(request, auditor),
    )
    return VerificationPublic(
        valid=result.valid,
        checked=result.checked,
        full=False,
        from_position=start,
        head=HeadPublic(position=result.head_position, hash=result.head_hash.hex()),
        first_invalid_position=result.first_invalid_position,
        reason=result.reason,
    )
