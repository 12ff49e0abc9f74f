"""The pure parts of `chatd serve --workers N` (chatd.supervisor); the processes themselves are
exercised in tests/test_serve_workers.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from pydantic import ValidationError

from chatd.errors import InvalidInput
from chatd.settings import Settings
from chatd.supervisor import describe, refuse_sqlite, relay_url


def test_a_worker_process_advertises_the_internal_url_with_its_own_relay_port() -> None:
    assert relay_url(Settings(host="127.0.0.1", port=8080), 41000) == "http://127.0.0.1:41000"
    # Listening on every interface: reached on loopback, as a single replica is.
    assert relay_url(Settings(host="0.0.0.0", port=8080), 41000) == "http://127.0.0.1:41000"
    assert relay_url(Settings(internal_url="http://box-3.internal:8080"), 41000) == "http://box-3.internal:41000"
    assert relay_url(Settings(internal_url="https://box-3.internal/chatd"), 41000) == "https://box-3.internal:41000/chatd"


def test_more_than_one_worker_process_needs_postgresql(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--workers 3 needs PostgreSQL"):
        refuse_sqlite(Settings(data_dir=tmp_path, workers=3))
    refuse_sqlite(Settings(data_dir=tmp_path, workers=3, database_url="postgresql://u@db/chatd"))


def test_workers_is_at_least_one() -> None:
    assert Settings().workers == 1
    with pytest.raises(ValidationError):
        Settings(workers=0)


def test_an_exit_is_described_by_its_code_or_its_signal() -> None:
    assert [describe(0), describe(3), describe(-signal.SIGKILL), describe(None)] == [
        "exit code 0", "exit code 3", "killed by SIGKILL", "still running",
    ]  # fmt: skip
