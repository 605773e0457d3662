"""The answer stream's wire format: FastAPI's encoder must keep writing our bytes."""

from __future__ import annotations

import json

from ragledger.api.sse import KEEP_ALIVE, format_sse
from ragledger.services.answering import StreamEvent


def test_an_event_is_its_name_and_one_line_of_utf8_json():
    data = {"text": "Grüße\nzwei Zeilen", "n": 1}
    framed = format_sse(StreamEvent("token", data))
    assert framed == ('event: token\ndata: {"text": "Grüße\\nzwei Zeilen", "n": 1}\n\n'.encode())
    name_line, data_line, *rest = framed.decode().split("\n")
    assert name_line == "event: token"
    assert rest == ["", ""]
    assert json.loads(data_line.removeprefix("data: ")) == data


def test_keep_alive_is_a_comment():
    assert KEEP_ALIVE == b": keep-alive\n\n"
