"""Server-Sent Events framing of the streamed answers, on FastAPI's own encoder.

Each event is `event: <name>` and one `data:` line of JSON (UTF-8 as is: `json.dumps`
never writes a raw newline, so one line always suffices), then a blank line; a silence
is broken by the comment `: keep-alive`. `fastapi.sse.format_sse_event` writes exactly
these bytes, so the framing is FastAPI's and only the JSON is ours.

The stream itself (`sse_stream` in `routes/questions.py`) is not FastAPI's SSE mode, a
generator path operation with `response_class=EventSourceResponse` (fastapi 0.165.0),
because that mode lacks what the answer stream needs and its tests pin:
- checks before the 200: the generator's body runs only once FastAPI has built the
  streamed 200 (an HTTPException(429) raised before the first `yield` gives a 200 with
  an empty body), so the 429 (question rate limit), 403 (unreadable document) and 422
  (empty question, no model) that `ask` answers before streaming would all have to
  become dependencies;
- a configurable keep-alive: its ping interval is the private module global
  `fastapi.sse._PING_INTERVAL`, 15 s for the whole process; ours is `SSE_KEEPALIVE_S`
  (the stall tests in `tests/e2e/test_questions.py` run it at 0.5 s);
- waiting for the answer flow on disconnect: it ends a stream by cancelling the anyio
  task group that drives the generator, and under anyio's level cancellation every
  await in the generator's `finally` is cancelled again, so it could not wait for the
  cancelled flow to record `AnswerFailed client_disconnected`; ours does;
- UTF-8 data: it encodes with `json.dumps` defaults (`ensure_ascii=True`), so every
  non-ASCII token would travel as `\\uXXXX` escapes.
Shutdown draining (`api/shutdown.py`: a grace period, then an `error` event with reason
`server_shutdown`) has no counterpart there at all. Neither writes event ids: a question
is a POST that is never resumed with `Last-Event-ID`; asking again is a new question.
"""

from __future__ import annotations

import json

from fastapi.sse import format_sse_event

from ragledger.services.answering import StreamEvent

KEEP_ALIVE = format_sse_event(comment="keep-alive")


def format_sse(event: StreamEvent) -> bytes:
    """One Server-Sent Event: its name and its data as one line of JSON."""
    return format_sse_event(event=event.name, data_str=json.dumps(event.data, ensure_ascii=False))
