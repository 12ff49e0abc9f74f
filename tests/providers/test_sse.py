"""The SSE decoder reads any byte stream, split anywhere, as the openai SDK's decoder does."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as SDKDecoder

from chatd.providers.streams.sse import SSEDecoder

TOKENS = [
    b"data:", b"data: ", b"data", b"event: ", b"event:", b"id: ", b"id:", b"retry: ", b"retry: 5", b": comment",
    b"\n", b"\r", b"\r\n", b"\n\n", b"{}", b"[DONE]", b"abc", b" ", b":", b"\x00", b"\xc3\xa9", b"x",
]  # fmt: skip


def _sdk(pieces: list[bytes]) -> tuple[list[tuple[str | None, str]], str | None]:
    out: list[tuple[str | None, str]] = []
    try:
        for sse in SDKDecoder().iter_bytes(iter(pieces)):
            out.append((sse.event, sse.data))
    except UnicodeDecodeError as exc:
        return out, type(exc).__name__
    return out, None


def _ours(pieces: list[bytes]) -> tuple[list[tuple[str | None, str]], str | None]:
    decoder = SSEDecoder()
    out: list[tuple[str | None, str]] = []

    def events() -> Iterator[tuple[str | None, str]]:
        for piece in pieces:
            for event in decoder.feed(piece):
                if event.error is not None:
                    raise event.error
                yield event.event, event.text()
        decoder.finish()

    try:
        out.extend(events())
    except UnicodeDecodeError as exc:
        return out, type(exc).__name__
    return out, None


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_stream_split_anywhere_decodes_as_the_sdk_does(tokens: list[bytes], cuts: list[int]) -> None:
    data = b"".join(tokens)
    assert _ours(_split(data, cuts)) == _sdk([data])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*TOKENS, b"\xff"]), max_size=30))
def test_invalid_utf8_fails_where_the_sdk_fails(tokens: list[bytes]) -> None:
    data = b"".join(tokens)
    ours, sdk = _ours([data]), _sdk([data])
    # The same events before the failure, and a failure exactly when the SDK fails.
    assert ours[1] == sdk[1]
    assert ours[0] == sdk[0]


def test_a_crlf_split_between_reads_is_one_line_end() -> None:
    assert _ours([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == ([(None, "a"), (None, "b")], None)
