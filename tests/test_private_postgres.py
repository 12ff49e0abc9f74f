"""The suite's PostgreSQL fallback works run after run, not only the first time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.private_postgres import pgdata_for

REPO = Path(__file__).resolve().parent.parent

# One test session's start of the private server: start it, run a query, stop it (as a reboot
# or a killed process group would), so that the next start begins from the existing data.
SESSION = """
import asyncio, sys
from pathlib import Path
import asyncpg
from tests.private_postgres import start, stop

pgdata = Path(sys.argv[1])
url = start(pgdata)

async def check() -> None:
    conn = await asyncpg.connect(url)
    try:
        print("answer", await conn.fetchval("SELECT 6 * 7"))
    finally:
        await conn.close()

asyncio.run(check())
stop(pgdata)
"""


@pytest.mark.slow
def test_the_private_postgresql_starts_again_on_the_data_of_an_earlier_run(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "CHATD_TEST_DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    for run in ("first", "second"):
        done = subprocess.run(
            [sys.executable, "-c", SESSION, str(pgdata)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"{run} run: {done.stderr[-3000:]}"
        assert "answer 42" in done.stdout, f"{run} run: {done.stdout}"


def test_two_checkouts_have_their_own_private_postgresql_and_one_keeps_its_own(tmp_path: Path) -> None:
    one, two = tmp_path / "one" / "chatd", tmp_path / "two" / "chatd"
    assert pgdata_for(one) != pgdata_for(two)
    assert pgdata_for(one) == pgdata_for(one)
    assert pgdata_for(REPO) == pgdata_for(REPO / "tests" / "..")
