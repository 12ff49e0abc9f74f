"""deploy/ stays true to chatd (docs/deployment.md): the compose file names only real settings and
gives each replica its own id and relay address but the same keys; the proxy does not buffer
streams, upgrades WebSockets and drops idle upstream connections before chatd does; the image
runs as a non-root user."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from chatd.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def nginx_directives() -> list[tuple[str, str]]:
    text = re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())
    return [(m.group(1), m.group(2).strip()) for m in re.finditer(r"^\s*([a-z_]+)\s+([^;{]*);", text, re.M)]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def test_the_compose_replicas_use_real_settings_share_the_keys_and_have_their_own_identity() -> None:
    services = compose()["services"]
    replicas = {name: s for name, s in services.items() if name.startswith("chatd-")}
    assert len(replicas) == 2
    settings = {f"CHATD_{name.upper()}" for name in Settings.model_fields}
    for name, service in replicas.items():
        env = service["environment"]
        unknown = sorted(k for k in env if k.startswith("CHATD_") and k not in settings)
        assert not unknown, (name, unknown)
        assert env["CHATD_INTERNAL_URL"] == f"http://{service['hostname']}:{env['CHATD_PORT']}" and service["hostname"] == name
        assert env["CHATD_HOST"] == "0.0.0.0" and "ports" not in service
        assert "@postgres:5432/" in env["CHATD_DATABASE_URL"] and service["depends_on"]["postgres"]["condition"] == "service_healthy"
    first, second = (r["environment"] for r in replicas.values())
    for shared in ("CHATD_SECRET_KEY", "CHATD_VAPID_PRIVATE_KEY", "CHATD_DATABASE_URL"):
        assert first[shared] == second[shared], shared
    assert first["CHATD_REPLICA_ID"] != second["CHATD_REPLICA_ID"]
    assert [n for n, s in services.items() if "ports" in s] == ["proxy"]
    assert set(services["proxy"]["depends_on"]) == set(replicas)


def test_nginx_streams_unbuffered_upgrades_websockets_and_closes_idle_upstreams_before_chatd() -> None:
    d = nginx_directives()
    values: dict[str, list[str]] = {}
    for key, value in d:
        values.setdefault(key, []).append(value)
    defaults = Settings()
    # The upstream block's keepalive_timeout (the only one in the file).
    assert seconds(values["keepalive_timeout"][0]) < defaults.http_keep_alive
    assert values["proxy_buffering"] == ["off"] and values["proxy_http_version"] == ["1.1"]
    assert seconds(values["proxy_read_timeout"][0]) > defaults.sse_keepalive * 4
    assert "Upgrade $http_upgrade" in values["proxy_set_header"] and "Connection $connection_upgrade" in values["proxy_set_header"]
    upstreams = {v.split()[0] for v in values["server"]}
    assert upstreams == {f"{n}:8080" for n in compose()["services"] if n.startswith("chatd-")}
    assert seconds(values["client_max_body_size"][0].replace("m", "")) * 2**20 > defaults.max_upload_bytes


def test_the_image_runs_chatd_as_a_user_with_the_ui_inside() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "web/static/index.html" in dockerfile and "--frozen" in dockerfile
    unit = (DEPLOY / "chatd.service").read_text()
    assert re.search(r"^User=chatd$", unit, re.M) and re.search(r"^KillSignal=SIGTERM$", unit, re.M)
