"""The test suite's own PostgreSQL, for machines without one: a server from the `pgserver` wheel,
started on first use and left running for the next session (a start takes about a second, initdb
several). Each checkout has its own data directory, so two checkouts never share a server."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pgdata_for(checkout: Path = REPO) -> Path:
    """The data directory of one checkout's private server: keyed by the checkout's path (and the
    user, as the temporary directory may be shared)."""
    key = hashlib.sha256(str(checkout.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"chatd-pgserver-{os.getuid()}-{key}"


def start(pgdata: Path) -> str:
    """Start the server in `pgdata` (or reuse it if it runs) and return an admin URL."""
    import pgserver

    # PostgreSQL refuses to start on a data directory others may read (0700 or 0750 only). As
    # root, pgserver hands the directory to its own `pgserver` user and runs the server as that.
    if pgdata.exists():
        os.chmod(pgdata, 0o700)
    srv = pgserver.get_server(str(pgdata), cleanup_mode=None)
    info = srv.get_postmaster_info()
    return f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port}"


def stop(pgdata: Path) -> None:
    """Stop the server in `pgdata`, e.g. to free its memory (the next session starts it again)."""
    import pgserver

    pgserver.pg_ctl(["-w", "stop"], pgdata=str(pgdata), user="pgserver" if os.geteuid() == 0 else None)
