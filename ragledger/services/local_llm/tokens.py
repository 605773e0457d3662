"""Tokenizer-side helpers: chat messages in, end tokens, incremental decoding, stopping."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragledger.services.local_llm.definitions import (
    END_TOKENS,
    LocalLLMError,
    LocalLLMRequestError,
)


def end_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Ids that end an answer: the tokenizer's EOS and ChatML's end tokens present in its vocab."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[token] for token in END_TOKENS if token in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise LocalLLMError("the tokenizer has no end-of-turn token")
    return tuple(sorted(ids))


def normalise_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """OpenAI-style chat messages as plain {role, content} strings for the chat template.

    Content given as a list of parts keeps its text parts; any other part (an image, a
    file) is refused, since the model reads text only. Missing content (an assistant
    turn that only called tools) becomes empty text.
    """
    if not messages:
        raise LocalLLMRequestError("messages must not be empty")
    normalised = []
    for message in messages:
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise LocalLLMRequestError("every message needs a role")
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text":
                    raise LocalLLMRequestError("the local model reads text parts only")
                parts.append(str(part.get("text", "")))
            text = "\n".join(parts)
        else:
            raise LocalLLMRequestError(f"unsupported message content: {type(content).__name__}")
        normalised.append({"role": role, "content": text})
    return normalised


class IncrementalDecoder:
    """Turns token ids into text deltas whose concatenation is the decoded whole.

    Decoding token by token would split multi-byte characters and drop the spaces that
    byte-level BPE attaches to the next token, so each step decodes a short window
    (the last emitted tokens plus the new ones) and emits only text that is complete,
    holding back anything that still ends in a replacement character (the approach of
    Hugging Face's text-generation-inference).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (often empty)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix) :] if len(text) > len(prefix) else ""


def stopping_on(event: threading.Event) -> Any:
    """A transformers StoppingCriteriaList that ends generation once event is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([_StopOnEvent()])


def token_sink(on_token: Callable[[int], None]) -> Any:
    """A transformers streamer that hands each generated token id to on_token."""
    from transformers.generation.streamers import BaseStreamer

    class _TokenSink(BaseStreamer):
        def __init__(self) -> None:
            self._prompt_seen = False

        def put(self, value: Any) -> None:
            # generate() first pushes the prompt, then one tensor per new token.
            if not self._prompt_seen:
                self._prompt_seen = True
                return
            for token_id in value.reshape(-1).tolist():
                on_token(int(token_id))

        def end(self) -> None:
            return

    return _TokenSink()
