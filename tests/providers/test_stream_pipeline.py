"""The stream pipeline's shortcut for plain text deltas is exactly what pydantic-ai's chat-template
restorer does to them: the same published parts, and the same text held and released later."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_ai._parts_manager import ModelResponsePartsManager
from pydantic_ai._special_tokens import StreamRestorer
from pydantic_ai.models import ModelRequestParameters

from chatd.providers.streams import EventPipeline, Published

# Pieces that build chat-template tokens (with and without the joiner chatd's requests put in
# them), their near misses, non-ASCII text and plain words, split anywhere by the chunking.
PIECES = [
    "<",
    "|",
    "im_start",
    "|>",
    "[",
    "INST",
    "]",
    "</s>",
    "\u200d",
    "\u200b",
    "é",
    "a b",
    " ",
    "x",
    "<\u200d|im_end|>",
]


def _run(chunks: list[list[str]], shortcut: bool, monkeypatch: pytest.MonkeyPatch) -> Published:
    """Each inner list is one text part's pieces, fed as the reader feeds them."""
    parts = ModelResponsePartsManager(model_request_parameters=ModelRequestParameters())
    parts.special_token_restorer = StreamRestorer()
    pipeline = EventPipeline(parts)
    out: Published = []
    with monkeypatch.context() as m:
        if not shortcut:
            m.setattr(EventPipeline, "_plain_text", staticmethod(lambda restorer, event: False))
        for index, pieces in enumerate(chunks):
            for piece in pieces:
                for event in parts.handle_text_delta(vendor_part_id=index, content=piece):
                    pipeline.emit(event, out)
        pipeline.end(out)
    return out


texts = st.lists(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("".join), min_size=1, max_size=12
)


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, min_size=1, max_size=3))
def test_plain_text_shortcut_matches_the_restorer(chunks: list[list[str]]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _run(chunks, True, monkeypatch) == _run(chunks, False, monkeypatch)
