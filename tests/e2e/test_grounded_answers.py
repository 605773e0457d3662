"""Grounded answers over real HTTP: extractive by default, generative answers checked,
declines recorded with their reason, and the audit view's groundedness filter.

Embeddings are the real local model; the generative model is the OpenAI-compatible fake
on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from ragledger.services.grounded_answers import DECLINE_ANSWER
from tests.e2e.conftest import Account, login, make_account
from tests.e2e.test_documents import drain
from tests.e2e.test_questions import LEAVE, _ledger, ask, names, serve, upload

QUESTION = "How many days of annual leave do employees get?"


async def _people(db, http) -> dict[str, Account]:
    made = {
        "admin": await make_account(db, "adam@example.com", "admin"),
        "hr": await make_account(db, "hana@example.com", "employee", ("hr",)),
        "auditor": await make_account(db, "aude@example.com", "auditor"),
    }
    for account in made.values():
        await login(http, account)
    return made


@pytest.fixture
async def extractive(db, settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Account]]]:
    """The app with no LLM_MODEL; every chunk is retrieved (so relevance decides)."""
    assert settings.llm_model is None
    plain = settings.model_copy(update={"min_similarity": -1.0})
    async with serve(plain) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        people = await _people(db, http)
        await upload(http, people["admin"], LEAVE, "leave.md", groups=["hr"])
        await drain(db, plain)
        yield http, people


@pytest.fixture
async def generative(
    db, settings, fake_openai
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Account]]]:
    """The app with the fake LLM configured: generative by default."""
    llm = settings.model_copy(
        update={
            "llm_model": "openai/fake-chat",
            "llm_api_base": fake_openai.base_url,
            "llm_api_key": SecretStr(fake_openai.api_key),
            "llm_num_retries": 0,
        }
    )
    async with serve(llm) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        people = await _people(db, http)
        await upload(http, people["admin"], LEAVE, "leave.md", groups=["hr"])
        await drain(db, llm)
        yield http, people


def _text(events) -> str:
    return "".join(d["text"] for n, d in events if n == "token")


async def test_without_a_model_answers_quote_the_context_with_citations(db, extractive) -> None:
    http, people = extractive
    events = await ask(http, people["hr"], QUESTION)
    assert names(events)[:2] == ["question", "context"]
    assert names(events)[-1] == "done"
    assert names(events).count("token") > 3, "the quote streams word by word"
    text = _text(events)
    assert "Employees get thirty days of annual leave per calendar year. [1]" in text
    done = dict(events)["done"]
    assert done["mode"] == "extractive"
    assert done["declined"] is None
    assert done["citations"] == [1]
    assert done["support"]["groundedness"] == 1.0
    assert done["support"]["unsupported_sentences"] == 0

    [generated] = await _ledger(db, "AnswerGenerated")
    assert generated.schema_version == 2
    payload = generated.payload
    assert payload["answer"] == text
    assert (payload["mode"], payload["model"]) == ("extractive", "extractive")
    assert payload["support"]["groundedness"] == "1.000"
    # Every quoted sentence is a sentence of the block it cites, word for word.
    [retrieved] = await _ledger(db, "ContextRetrieved")
    answer = (
        await http.get(f"/api/v1/answers/{payload['question_id']}", headers=people["hr"].headers)
    ).json()
    blocks = {c["n"]: " ".join(c["text"].split()) for c in answer["context"]}
    assert len(blocks) == len(retrieved.payload["chunks"])
    for sentence in payload["support"]["sentences"]:
        quoted = text[sentence["start"] : sentence["end"]]
        assert quoted in blocks[sentence["cited"][0]]
        assert float(sentence["relevance"]) >= 0.35 or sentence["relevance"] is None


async def test_an_unrelated_question_is_declined_with_the_reason(db, extractive) -> None:
    http, people = extractive
    events = await ask(http, people["hr"], "What is the capital city of France?")
    assert dict(events)["context"]["citations"], "min_similarity -1: the chunk is retrieved"
    assert _text(events) == DECLINE_ANSWER
    done = dict(events)["done"]
    assert done["declined"].startswith("low_relevance: the best sentence scored")
    assert done["citations"] == []
    [generated] = await _ledger(db, "AnswerGenerated")
    assert generated.payload["answer"] == DECLINE_ANSWER
    assert generated.payload["declined"] == done["declined"]
    assert generated.payload["no_context"] is False


async def test_generative_mode_without_a_model_is_refused_before_anything_is_recorded(
    db, extractive
) -> None:
    http, people = extractive
    response = await http.post(
        "/api/v1/questions",
        headers=people["hr"].headers,
        json={"question": QUESTION, "mode": "generative"},
    )
    assert response.status_code == 422
    assert "LLM_MODEL" in response.json()["detail"]
    bad = await http.post(
        "/api/v1/questions", headers=people["hr"].headers, json={"question": "x?", "mode": "poem"}
    )
    assert bad.status_code == 422
    assert await _ledger(db, "QuestionAsked") == []


async def test_generated_answers_are_checked_sentence_by_sentence(
    db, settings, generative, fake_openai
) -> None:
    http, people = generative
    fake_openai.chat.answer = (
        "Employees get thirty days of annual leave per calendar year [1]. "
        "The company cafeteria serves free pizza to visitors every Monday [1]."
    )
    events = await ask(http, people["hr"], QUESTION)
    done = dict(events)["done"]
    assert done["mode"] == "generative"
    assert done["declined"] is None
    support = done["support"]
    assert support["groundedness"] == 0.5
    first, second = support["sentences"]
    assert (first["supported"], first["unsupported_citations"]) == (True, [])
    assert (second["supported"], second["unsupported_citations"]) == (False, [1])
    assert support["citations_verified"] == [1]
    assert support["citations_unsupported"] == [1]
    [generated] = await _ledger(db, "AnswerGenerated")
    assert generated.payload["answer"] == fake_openai.chat.answer
    assert generated.payload["support"]["unsupported_sentences"] == 1
    assert generated.payload["support"]["method"].startswith("cosine*0.6+lexical*0.4")

    # The same question in extractive mode, chosen per request, calls no model.
    calls = len(fake_openai.chat_requests)
    quoted = await ask(http, people["hr"], QUESTION, mode="extractive")
    assert dict(quoted)["done"]["mode"] == "extractive"
    assert len(fake_openai.chat_requests) == calls

    # Auditors find the weakly supported answer by its groundedness.
    await drain(db, settings)
    auditor = people["auditor"].headers
    weak = await http.get("/api/v1/audit/answers?max_groundedness=0.5", headers=auditor)
    assert weak.status_code == 200
    [item] = weak.json()["items"]
    assert item["question_id"] == generated.payload["question_id"]
    assert (item["groundedness"], item["unsupported_sentences"]) == (0.5, 1)
    assert item["mode"] == "generative"
    stricter = await http.get("/api/v1/audit/answers?max_groundedness=0.49", headers=auditor)
    assert stricter.json()["items"] == []
    everything = await http.get("/api/v1/audit/answers?max_groundedness=1", headers=auditor)
    assert len(everything.json()["items"]) == 2
    out_of_range = await http.get("/api/v1/audit/answers?max_groundedness=2", headers=auditor)
    assert out_of_range.status_code == 422


async def test_a_generated_answer_with_no_supported_sentence_is_declined(
    db, generative, fake_openai
) -> None:
    http, people = generative
    invented = 'Add <link rel="license" href="/license.html"> to every page of the website [1].'
    fake_openai.chat.answer = invented
    events = await ask(http, people["hr"], QUESTION)
    # The model's words streamed before they could be checked; `done` replaces them.
    assert _text(events) == invented
    done = dict(events)["done"]
    assert done["answer"] == DECLINE_ANSWER
    assert done["declined"].startswith("no_supported_sentence")
    assert done["citations"] == []
    [generated] = await _ledger(db, "AnswerGenerated")
    payload = generated.payload
    assert payload["answer"] == DECLINE_ANSWER
    assert payload["generated_answer"] == invented
    assert payload["declined"] == done["declined"]
    assert payload["support"]["groundedness"] == "0.000"
    assert payload["support"]["citations_unsupported"] == [1]
