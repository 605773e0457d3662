"""A real HTTP server on loopback that speaks enough of the OpenAI API for litellm.

Point litellm's `openai/` provider at it::

    with FakeOpenAI() as fake:
        fake.chat.answer = "Twenty-five days."
        fake.chat.tokens_per_second = 50
        await litellm.acompletion(
            model="openai/fake-chat", api_base=fake.base_url, api_key=fake.api_key,
            messages=[...], stream=True, stream_options={"include_usage": True},
        )
        assert "vacation" in fake.chat_requests[-1].body["messages"][-1]["content"]

or take the `fake_openai` fixture, registered with
`pytest_plugins = ["tests.fakes.openai_server"]` in a conftest.py.

The server runs its own event loop on a daemon thread, so a test's loop is never blocked
by it, and a stalled or slow response is a real one: the client sees bytes arrive (or
not) over a socket, exactly as it would from a provider.

Endpoints:
- `POST /v1/embeddings`: one vector per input, derived from the SHA-256 of the input
  (see `FakeOpenAI.embedding_for`); deliberately not unit length, so that a client's
  normalisation is exercised. Honours `encoding_format: "base64"`.
- `POST /v1/chat/completions`: the configured answer, non-streamed or streamed as
  server-sent events the way OpenAI sends them: content chunks
  (`choices[0].delta.content`, the first one also carrying `role`), a chunk with
  `finish_reason` and an empty delta, then, when the request sets
  `stream_options.include_usage`, a chunk with `choices: []` and `usage`, then
  `data: [DONE]`.
- `GET /v1/models`: a list with the fake model names.

Knobs (plain attributes, change them at any time, even between requests of one test):
- `fake.chat` (`ChatBehaviour`): `answer`, or `tokens` for an exact split;
  `tokens_per_second` (None: all at once); `delay_before_first_token_s` (after the
  response headers, before the first token); `delay_after_first_token_s`;
  `error_status` + `error_message` + `error_times` (fail the next N requests, None:
  every request); `drop_after_tokens` (streamed answers: close the connection after N
  content tokens, without finishing the chunked body); `finish_reason`; `model`.
  A non-streamed answer waits out the delays and the pace, then comes whole.
  `number_prefix` (a format string with `{n}`, e.g. `"[stub {n}] "`) is put before
  the answer's first token, `n` being the completion's number (its id is
  `chatcmpl-fake-<n>`), so that a client can tell which completion it was relayed.
- `fake.embeddings` (`EmbeddingBehaviour`): `dimensions`, `delay_s`, `error_status`,
  `error_message`, `error_times`.
- `fake.require_api_key`: when set, requests without `Authorization: Bearer <key>` get
  401 as from OpenAI.

Every request is recorded before any knob acts on it (`fake.requests`,
`fake.chat_requests`, `fake.embedding_requests`, `fake.last_chat_messages()`), unless
the server was made with `record_requests=False` (long load runs, where the bodies would
pile up). Each streamed completion also leaves a `ChatStreamTiming` in
`fake.chat_streams`: its number and the `time.monotonic()` instants it was received, its
first content token was written to the socket, and its body was finished, which is what
a benchmark needs to separate the model's time to first token from the time a client
adds on top (CLOCK_MONOTONIC is system-wide on Linux, so the instants compare with
another process's `time.monotonic()`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import pytest
from aiohttp import web

DEFAULT_ANSWER = "Employees get 25 days of paid annual leave per calendar year."


@dataclass
class ChatBehaviour:
    """How `/v1/chat/completions` answers; every field may be changed between requests."""

    answer: str = DEFAULT_ANSWER
    # An exact token split of the answer; None splits `answer` into words with their
    # trailing whitespace, so the tokens concatenate back to the answer.
    tokens: list[str] | None = None
    # Streaming pace; None sends every token at once.
    tokens_per_second: float | None = None
    # Stalls. Headers are sent first, so a client sees an open stream that goes quiet.
    delay_before_first_token_s: float = 0.0
    delay_after_first_token_s: float = 0.0
    # An error answered instead of the completion, `error_times` times (None: always).
    error_status: int | None = None
    error_message: str = "The fake server had an error while processing your request."
    error_times: int | None = None
    # Abort the TCP connection after this many content tokens of a streamed answer.
    drop_after_tokens: int | None = None
    finish_reason: str = "stop"
    # Model name in responses; None echoes the request's.
    model: str | None = None
    # Put before the first token, with `{n}` replaced by the completion's number.
    number_prefix: str | None = None

    def token_list(self) -> list[str]:
        """The tokens the answer is streamed as."""
        if self.tokens is not None:
            return list(self.tokens)
        return re.findall(r"\s+|\S+\s*", self.answer)

    def numbered_token_list(self, number: int) -> list[str]:
        """The tokens of completion `number`: `token_list()` with `number_prefix` applied."""
        tokens = self.token_list()
        if self.number_prefix is None:
            return tokens
        prefix = self.number_prefix.format(n=number)
        return [prefix + tokens[0], *tokens[1:]] if tokens else [prefix]


@dataclass
class EmbeddingBehaviour:
    """How `/v1/embeddings` answers; every field may be changed between requests."""

    dimensions: int = 384
    delay_s: float = 0.0
    error_status: int | None = None
    error_message: str = "The fake server had an error while processing your request."
    error_times: int | None = None


@dataclass
class ChatStreamTiming:
    """When one streamed completion was received, began and ended (`time.monotonic()`)."""

    number: int
    received_at: float
    # After the response headers were written.
    headers_sent_at: float | None = None
    # After the first content chunk was written (handed to the socket).
    first_token_at: float | None = None
    last_token_at: float | None = None
    # After `[DONE]` and the end of the body; None if the stream was dropped or cut.
    finished_at: float | None = None
    tokens_sent: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)


class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1 and a free port, run on its own thread."""

    api_key = "sk-fake-key"

    def __init__(
        self,
        *,
        chat: ChatBehaviour | None = None,
        embeddings: EmbeddingBehaviour | None = None,
        require_api_key: str | None = None,
        record_requests: bool = True,
    ) -> None:
        self.chat = chat or ChatBehaviour()
        self.embeddings = embeddings or EmbeddingBehaviour()
        self.require_api_key = require_api_key
        self.record_requests = record_requests
        self._requests: list[RecordedRequest] = []
        self._chat_streams: list[ChatStreamTiming] = []
        self._requests_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # Addresses

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, without a path."""
        if self._port is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """What litellm takes as `api_base`: the URL with `/v1`."""
        return f"{self.url}/v1"

    # Records

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._requests_lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The requests to `/v1/chat/completions`."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        """The requests to `/v1/embeddings`."""
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    @property
    def chat_streams(self) -> list[ChatStreamTiming]:
        """Timings of every streamed completion so far, in order of arrival (a copy)."""
        with self._requests_lock:
            return list(self._chat_streams)

    def last_chat_messages(self) -> list[dict[str, Any]]:
        """The `messages` of the latest chat request (what the platform prompted)."""
        requests = self.chat_requests
        if not requests:
            raise AssertionError("no chat request was received")
        return list(requests[-1].body["messages"])

    def reset(self) -> None:
        """Default behaviours and no recorded requests."""
        self.chat = ChatBehaviour()
        self.embeddings = EmbeddingBehaviour()
        self.require_api_key = None
        with self._requests_lock:
            self._requests.clear()
            self._chat_streams.clear()

    @staticmethod
    def embedding_for(text: str, dimensions: int) -> np.ndarray:
        """The raw (not normalised) float32 vector the server returns for text."""
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        # Scaled away from unit length on purpose: clients must normalise.
        return (np.random.default_rng(seed).standard_normal(dimensions) * 3.0).astype(np.float32)

    # Life cycle

    def start(self) -> Self:
        """Start the server thread and wait until it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI is already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        asyncio.run_coroutine_threadsafe(self._start_site(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Cancel in-flight responses, close the socket and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # Stalled handlers would otherwise hold stop() for aiohttp's default 60 s.
        runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    # Handlers

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if not self.record_requests:
            return body
        with self._requests_lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    headers=dict(request.headers),
                    body=body,
                )
            )
        return body

    def _unauthorised(self, request: web.Request) -> web.Response | None:
        if self.require_api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.require_api_key}":
            return None
        return _error_response(401, "Incorrect API key provided.", "invalid_request_error")

    @staticmethod
    def _take_error(behaviour: ChatBehaviour | EmbeddingBehaviour) -> web.Response | None:
        if behaviour.error_status is None:
            return None
        if behaviour.error_times is not None:
            if behaviour.error_times <= 0:
                return None
            behaviour.error_times -= 1
        return _error_response(behaviour.error_status, behaviour.error_message, "server_error")

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        names = ["fake-chat", "fake-embed"]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]
        return web.json_response({"object": "list", "data": data})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        behaviour = self.embeddings
        refused = self._unauthorised(request) or self._take_error(behaviour)
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        if refused is not None:
            return refused
        if not isinstance(body, dict) or "input" not in body:
            return _error_response(400, "'input' is a required property", "invalid_request_error")
        inputs = body["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else json.dumps(item)
            vector = self.embedding_for(text, behaviour.dimensions)
            embedding: Any = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                if as_base64
                else [float(x) for x in vector]
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_count_words(item if isinstance(item, str) else "") for item in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake-embed"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        received_at = time.monotonic()
        body = await self._record(request)
        behaviour = self.chat
        refused = self._unauthorised(request) or self._take_error(behaviour)
        if refused is not None:
            return refused
        if not isinstance(body, dict) or not body.get("messages"):
            return _error_response(
                400, "'messages' is a required property", "invalid_request_error"
            )
        model = behaviour.model or body.get("model", "fake-chat")
        number = next(self._ids)
        completion_id = f"chatcmpl-fake-{number}"
        created = int(time.time())
        tokens = behaviour.numbered_token_list(number)
        prompt_tokens = sum(
            _count_words(m.get("content") if isinstance(m.get("content"), str) else "")
            for m in body["messages"]
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        if not body.get("stream"):
            await asyncio.sleep(_generation_time(behaviour, len(tokens)))
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(tokens)},
                            "finish_reason": behaviour.finish_reason,
                        }
                    ],
                    "usage": usage,
                }
            )
        timing = ChatStreamTiming(number=number, received_at=received_at)
        with self._requests_lock:
            self._chat_streams.append(timing)
        return await self._stream(
            request, body, behaviour, tokens, usage, completion_id, model, timing
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        behaviour: ChatBehaviour,
        tokens: list[str],
        usage: dict[str, int],
        completion_id: str,
        model: str,
        timing: ChatStreamTiming,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        timing.headers_sent_at = time.monotonic()
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        async def send(payload: dict[str, Any] | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {text}\n\n".encode())

        if behaviour.delay_before_first_token_s:
            await asyncio.sleep(behaviour.delay_before_first_token_s)
        interval = 1.0 / behaviour.tokens_per_second if behaviour.tokens_per_second else 0.0
        # An empty answer still opens with the role, as OpenAI does.
        for index, token in enumerate(tokens or [""]):
            if index == 1 and behaviour.delay_after_first_token_s:
                await asyncio.sleep(behaviour.delay_after_first_token_s)
            if index > 0 and interval:
                await asyncio.sleep(interval)
            if behaviour.drop_after_tokens is not None and index >= behaviour.drop_after_tokens:
                return _abort(request, response)
            delta = {"role": "assistant", "content": token} if index == 0 else {"content": token}
            await send(chunk(delta))
            timing.last_token_at = time.monotonic()
            timing.tokens_sent = index + 1
            if index == 0:
                timing.first_token_at = timing.last_token_at
        if behaviour.drop_after_tokens is not None and behaviour.drop_after_tokens <= len(tokens):
            return _abort(request, response)
        await send(chunk({}, behaviour.finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            final = chunk({})
            final["choices"] = []
            final["usage"] = usage
            await send(final)
        await send("[DONE]")
        await response.write_eof()
        timing.finished_at = time.monotonic()
        return response


def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Cut the connection mid-body: the client sees a chunked body that never ends."""
    response.force_close()
    if request.transport is not None:
        request.transport.abort()
    return response


def _error_response(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": None}},
        status=status,
    )


def _count_words(text: str) -> int:
    return len(text.split())


def _generation_time(behaviour: ChatBehaviour, token_count: int) -> float:
    pace = token_count / behaviour.tokens_per_second if behaviour.tokens_per_second else 0.0
    return behaviour.delay_before_first_token_s + behaviour.delay_after_first_token_s + pace


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI with default behaviour, stopped after the test."""
    with FakeOpenAI() as fake:
        yield fake
