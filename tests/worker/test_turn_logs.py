"""Log lines written while a worker runs a turn name the chat, the turn generation and the replica,
including those of the libraries it calls (the provider SDK's HTTP requests)."""

from __future__ import annotations

import io
import json

from tests.fakes.llm_server import Reply
from tests.worker.conftest import Rig


async def test_a_turns_log_lines_carry_its_chat_and_generation(rig: Rig, captured: io.StringIO) -> None:
    rig.llm.script(Reply(text="Hi."))
    chat = await rig.chat("hello")
    await rig.run()
    done = await rig.get(chat.id)
    events = [json.loads(line) for line in captured.getvalue().splitlines()]
    mine = [e for e in events if e.get("chat_id") == str(chat.id)]
    # The provider SDK's request to the scripted server was logged inside the turn's context.
    http = [e for e in mine if e["logger"].startswith(("httpx", "openai")) and "/chat/completions" in e["msg"]]
    assert http, [e for e in events if e["logger"].startswith("httpx")]
    assert {e["turn"] for e in mine} == {str(done.generation)}
    assert {e["replica"] for e in mine} == {str(rig.workers.worker_id)}
