"""The instruction files a workspace's agent serves (`~/.chatd/AGENTS.md`, `<dir>/AGENTS.md`) and
the OS it runs on, for the system prompt."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from chatd.workspace.files import utf8_end

INSTRUCTION_CAP = 64 * 1024  # REFERENCE §12.2


def os_description() -> str:
    name = f"{platform.system()} {platform.release()}".strip()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} ({name}, {platform.machine()})"
    return f"{name} ({platform.machine()})"


class InstructionFiles:
    """`~/.chatd/AGENTS.md` and `<dir>/AGENTS.md`, re-read only when their stat changes, so a
    changed file is seen on the next request and an unchanged one costs one `stat`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    def _home_file(self) -> Path | None:
        home = Path(os.path.expanduser("~")) / ".chatd"
        try:
            names = sorted(os.listdir(home))
        except OSError:
            return None
        # Case-insensitive, as the reference matches `agents.md` in the home directory.
        return next((home / n for n in names if n.lower() == "agents.md"), None)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
        try:
            with path.open("rb") as f:
                raw = f.read(INSTRUCTION_CAP + 1)
        except OSError:
            return None
        truncated = len(raw) > INSTRUCTION_CAP
        raw = raw[: utf8_end(raw, INSTRUCTION_CAP)] if truncated else raw
        entry = {"path": str(path), "content": raw.decode("utf-8", errors="replace"), "truncated": truncated}
        self._cache[path] = (key, entry)
        return entry

    def read(self) -> dict[str, Any]:
        files = []
        for path in (self._home_file(), self.root / "AGENTS.md"):
            entry = self._read(path) if path is not None else None
            if entry is not None:
                files.append(entry)
        return {"os": os_description(), "directory": str(self.root), "files": files}
