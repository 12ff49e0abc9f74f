from __future__ import annotations

from pathlib import Path

import httpx

from chatd.api.app import create_app
from chatd.bootstrap import build, ensure_admin
from chatd.settings import Settings


async def test_healthz_answers_and_first_start_writes_admin_token(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, run_workers=False)
    app = await build(settings)
    try:
        token = await ensure_admin(app)
        assert token is not None
        token_file = settings.data_dir / "admin-token"
        assert token_file.read_text().strip() == token
        assert token_file.stat().st_mode & 0o777 == 0o600
        # A second start finds users and creates nothing.
        assert await ensure_admin(app) is None

        api = create_app(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as client:
            r = await client.get("/healthz")
            assert r.status_code == 200
            assert r.json() == {"status": "ok", "database": "ok", "replica_id": str(settings.replica_id)}
            me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200 and me.json()["role"] == "admin"
    finally:
        await app.close()
