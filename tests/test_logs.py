"""Logs: secrets never reach a log line at any level; JSON lines off a terminal, with context.

The end-to-end test runs `chatd serve` at DEBUG, makes real WebSocket handshakes carrying the
admin token (header and subprotocol forms) and reads the process's stderr."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets

from chatd import logs
from tests.test_serve_blackbox import LISTENING, LOGIN, STOP_TIMEOUT, Served, free_port


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("< authorization: Bearer chatd_abcDEF123456789xyz", "chatd_abcDEF123456789xyz"),
        ("< sec-websocket-protocol: bearer.chatd_abcDEF123456789xyz", "abcDEF123456789xyz"),
        ("HTTP Request: POST http://alice:pw-9876543@mcp.example:8080/mcp", "pw-9876543"),
        ("connecting to postgresql://chatd:hunter2hunter2@db/chatd", "hunter2hunter2"),
        ("Authorization: Basic YWxpY2U6cHctOTg3NjU0Mw==", "YWxpY2U6cHctOTg3NjU0Mw=="),
        ("x-api-key: sk-live-1234", "sk-live-1234"),
        ('"GET /api/v1/chats?access_token=opaque-tok-123&x=1 HTTP/1.1" 200', "opaque-tok-123"),
        ("token chatd_Q1w2E3r4T5y6U7i8 refused", "Q1w2E3r4T5y6U7i8"),
    ],
)
def test_redact_removes_every_token_shape(line: str, secret: str) -> None:
    clean = logs.redact(line)
    assert secret not in clean
    assert logs.REDACTED in clean


def test_redact_keeps_ordinary_sentences() -> None:
    for line in ("the server uses bearer authentication", "basic usage", "exit code=1", "127.0.0.1:40008 - WebSocket /x 403"):
        assert logs.redact(line) == line


def test_a_registered_secret_is_redacted_wherever_it_appears(captured: io.StringIO) -> None:
    logs.register_secret("sk-ant-0123456789-registered")
    logging.getLogger("some.library").debug("calling with key %s", "sk-ant-0123456789-registered")
    logging.getLogger("other").error("failed", exc_info=ValueError("bad key sk-ant-0123456789-registered"))
    out = captured.getvalue()
    assert "sk-ant-0123456789-registered" not in out
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["msg"] for e in events] == [f"calling with key {logs.REDACTED}", "failed"]
    assert logs.REDACTED in events[1]["exc"]


def test_secret_box_registers_what_it_opens(captured: io.StringIO, tmp_path: Path) -> None:
    from chatd.store.secrets import SecretBox

    box = SecretBox.from_settings("", tmp_path)
    sealed = box.seal("provider-key-never-logged-42")
    assert box.open(sealed) == "provider-key-never-logged-42"
    logging.getLogger("httpx").info("provider said: invalid key provider-key-never-logged-42")
    assert "provider-key-never-logged-42" not in captured.getvalue()


async def test_json_lines_carry_the_chat_turn_and_replica_of_the_task(captured: io.StringIO) -> None:
    log = logging.getLogger("chatd.test")
    logs.replica_var.set("replica-1")

    async def turn() -> None:
        with logs.log_context(chat_id="chat-1", turn="t-1"):
            log.info("step done\nsecond line")

    await asyncio.create_task(turn())
    log.warning("outside")
    first, second = (e for line in captured.getvalue().splitlines() if (e := json.loads(line))["logger"] == "chatd.test")
    assert {k: first[k] for k in ("level", "logger", "msg", "replica", "chat_id", "turn")} == {
        "level": "info", "logger": "chatd.test", "msg": "step done\nsecond line", "replica": "replica-1", "chat_id": "chat-1", "turn": "t-1",
    }  # fmt: skip
    assert "chat_id" not in second and second["msg"] == "outside"


def test_text_on_a_terminal_names_the_chat() -> None:
    formatter = logs.TextFormatter(color=False)
    record = logging.LogRecord("chatd.worker", logging.INFO, __file__, 1, "turn %s", ("Bearer chatd_abcdefgh12345678",), None)
    record.chat_id, record.turn = "chat-1", "t-1"
    line = formatter.format(record)
    assert line.endswith("INFO    chatd.worker: turn Bearer [redacted]  [chat_id=chat-1 turn=t-1]")


@pytest.mark.slow
def test_debug_logs_of_real_websocket_handshakes_never_show_the_token(tmp_path: Path) -> None:
    data_dir, port, stderr = tmp_path / "data", free_port(), tmp_path / "stderr.log"
    args = [sys.executable, "-m", "chatd.cli", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env.update(CHATD_RUN_WORKERS="false", CHATD_LOG_LEVEL="debug", PYTHONUNBUFFERED="1")
    with stderr.open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    served = Served(proc, stderr)
    try:
        base = served.wait_for(LISTENING).group(1)
        token = served.wait_for(LOGIN).group(2)
        auth = {"Authorization": f"Bearer {token}"}
        chat = httpx.post(f"{base}/api/v1/chats", json={"content": "hello"}, headers=auth, timeout=10).json()
        ws_url = f"ws://127.0.0.1:{port}/api/v1/chats/{chat['id']}/stream"

        async def handshakes() -> list[str | None]:
            chosen = []
            for kwargs in ({"additional_headers": auth}, {"subprotocols": [f"bearer.{token}"]}):
                async with websockets.connect(ws_url, **kwargs) as ws:  # type: ignore[arg-type]
                    chosen.append(ws.subprotocol)
                    json.loads(await asyncio.wait_for(ws.recv(), 10))
            return chosen

        assert asyncio.run(handshakes()) == [None, f"bearer.{token}"]
        # A token in a query string (clients that cannot set headers try this too).
        httpx.get(f"{base}/api/v1/me", params={"access_token": token}, timeout=10)
        code, _ = served.stop()
        assert code == 0, served.log()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()

    out = stderr.read_text()
    events = [json.loads(line) for line in out.splitlines()]  # stderr is a file: JSON lines only
    messages = [e["msg"] for e in events]
    # The handshakes were logged at DEBUG, header by header, with the credentials scrubbed.
    assert messages.count(f"< authorization: {logs.REDACTED}") == 1, messages
    assert messages.count(f"< sec-websocket-protocol: bearer.{logs.REDACTED}") == 1, messages
    assert any("access_token=" + logs.REDACTED in m for m in messages), messages
    assert token not in out
    assert token.removeprefix("chatd_") not in out
