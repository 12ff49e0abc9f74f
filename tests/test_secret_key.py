"""A replica started with another secret key refuses to start (issue 9, item 7), instead of
starting happily and failing every chat with "a stored secret cannot be decrypted"."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import delete, select

from chatd.bootstrap import build
from chatd.domain.chat import UserRole
from chatd.errors import SecretKeyMismatch
from chatd.settings import Settings
from chatd.store import users as user_store
from chatd.store.tables import server_meta


def settings(db_url: str, data_dir: Path, key: str = "") -> Settings:
    return Settings(data_dir=data_dir, database_url=db_url, secret_key=key, run_workers=False)


async def start(s: Settings) -> None:
    app = await build(s)
    await app.close()


async def test_a_replica_with_another_key_refuses_to_start_and_the_right_key_still_starts(db_url: str, tmp_path: Path) -> None:
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    await start(settings(db_url, tmp_path / "a", key_a))
    with pytest.raises(SecretKeyMismatch) as err:
        await start(settings(db_url, tmp_path / "b", key_b))
    assert "CHATD_SECRET_KEY" in err.value.message and "\n" not in err.value.message
    await start(settings(db_url, tmp_path / "c", key_a))
    # What the database keeps identifies the key and does not reveal it.
    app = await build(settings(db_url, tmp_path / "a", key_a))
    try:
        async with app.db.read() as conn:
            stored = [r.value for r in await conn.execute(select(server_meta))]
        assert len(stored) == 1 and key_a not in stored[0] and key_a.rstrip("=") not in stored[0]
    finally:
        await app.close()


async def test_replicas_with_their_own_generated_key_files_are_refused_naming_the_file(db_url: str, tmp_path: Path) -> None:
    await start(settings(db_url, tmp_path / "one"))
    with pytest.raises(SecretKeyMismatch) as err:
        await start(settings(db_url, tmp_path / "two"))
    assert str(tmp_path / "two" / "secret-key") in err.value.message
    # Copying the first one's key file is the fix.
    (tmp_path / "three").mkdir()
    (tmp_path / "three" / "secret-key").write_bytes((tmp_path / "one" / "secret-key").read_bytes())
    await start(settings(db_url, tmp_path / "three"))


async def test_a_database_from_before_fingerprints_is_checked_against_its_sealed_secrets(db_url: str, tmp_path: Path) -> None:
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = await build(settings(db_url, tmp_path / "a", key_a))
    try:
        admin = await user_store.create_user(app.db, app.clock.now(), "admin", UserRole.ADMIN)
        await app.service.create_provider(admin, provider="anthropic", display_name=None, api_key="sk-ant-secret", base_url=None, enabled=True)
        async with app.db.write() as conn:
            await conn.execute(delete(server_meta))  # as an older chatd left it
    finally:
        await app.close()
    with pytest.raises(SecretKeyMismatch):
        await start(settings(db_url, tmp_path / "b", key_b))
    await start(settings(db_url, tmp_path / "a", key_a))


async def test_chatd_serve_with_another_key_exits_non_zero_with_one_line(db_url: str, tmp_path: Path) -> None:
    await start(settings(db_url, tmp_path / "first", Fernet.generate_key().decode()))
    env = {**os.environ, "CHATD_SECRET_KEY": Fernet.generate_key().decode()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatd.cli", "serve", "--data-dir", str(tmp_path / "second"), "--database-url", db_url,
        "--host", "127.0.0.1", "--port", "0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode not in (0, None)
    lines = [line for line in (out + err).decode().splitlines() if "secret key" in line]
    assert len(lines) == 1 and "CHATD_SECRET_KEY" in lines[0], (out + err).decode()
    assert "Traceback" not in (out + err).decode()


async def test_an_operator_who_lost_the_key_can_start_over_with_a_new_one(db_url: str, tmp_path: Path) -> None:
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    await start(settings(db_url, tmp_path / "a", key_a))
    reset = settings(db_url, tmp_path / "b", key_b)
    reset.secret_key_reset = True
    await start(reset)
    await start(settings(db_url, tmp_path / "b", key_b))  # the new key is the deployment's now
    with pytest.raises(SecretKeyMismatch):
        await start(settings(db_url, tmp_path / "a", key_a))
