"""The workspace agent's file tools: paths kept inside the workspace (`Confinement`), reading by
lines, atomic writes, and all-or-nothing multi-file search/replace edits. With commands under
another uid (`RunAs`), what the agent writes belongs to that uid, and it reads only what that uid
could read (`check_readable_by`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatd.workspace.errors import AgentError, bad

DEFAULT_READ_LINES = 2000  # REFERENCE §7.2
MAX_READ_LINES = 10_000
MAX_READ_BYTES = 256 * 1024  # per read_file call; the model paginates with offset
MAX_LINE_CHARS = 2000  # minified files would otherwise fill a whole page with one line
BINARY_SNIFF = 8192


@dataclass(frozen=True, slots=True)
class RunAs:
    """The unprivileged user and group commands run as (the agent itself stays who it is)."""

    uid: int
    gid: int


def give_to(path: Path, owner: RunAs | None) -> None:
    """Files the agent (running as chatd's user) writes belong to the command user, so commands
    can change them too."""
    if owner is not None:
        with contextlib.suppress(OSError):
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)


class Confinement:
    """Resolves request paths against the workspace directory and keeps them inside it."""

    def __init__(self, root: Path, *, allow_outside: bool = False) -> None:
        self.root = Path(os.path.realpath(root))
        self.allow_outside = allow_outside

    def resolve(self, path: str) -> Path:
        if not path or not path.strip():
            raise bad("path is required")
        if "\0" in path:
            raise bad("path contains a NUL byte")
        p = Path(path)
        if not p.is_absolute():
            p = self.root / p
        # realpath follows every symlink that exists, so `link -> /etc` and `a/../../x` both land
        # where they really point before the check.
        real = Path(os.path.realpath(p))
        if not self.allow_outside and not (real == self.root or self.root in real.parents):
            raise AgentError(
                403,
                "outside_workspace",
                f"path {path!r} resolves to {real}, outside the workspace directory {self.root}",
            )
        return real


def _number(n: int, text: str) -> str:
    if len(text) > MAX_LINE_CHARS:
        text = f"{text[:MAX_LINE_CHARS]}… [line truncated: {len(text)} characters]"
    return f"{n:>6}\t{text}"


def check_readable_by(fd: int, owner: RunAs | None, display: str) -> None:
    """With commands under another uid, the file tools (running as chatd's user) read only what
    that uid could read itself: a command could otherwise plant a hard link to, or race a symlink
    towards, a file only chatd may read. Checked on the opened file, so no swap gets past it."""
    if owner is None:
        return
    st = os.fstat(fd)
    if st.st_uid == owner.uid or st.st_mode & 0o004 or (st.st_gid == owner.gid and st.st_mode & 0o040):
        return
    raise AgentError(403, "not_readable", f"{display} is not readable by the workspace's user")


def read_lines(path: Path, display: str, offset: int, limit: int, owner: RunAs | None = None) -> dict[str, Any]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AgentError(404, "not_found", f"file not found: {display}") from None
    except OSError as exc:
        raise bad(f"cannot read {display}: {exc.strerror}") from exc
    if path.is_dir():
        raise bad(f"{display} is a directory; use execute with `ls` to list it", "is_directory")
    out: list[str] = []
    used = 0
    total = 0
    stopped_at: int | None = None  # first line not returned because of the byte budget
    try:
        with path.open("rb") as f:
            check_readable_by(f.fileno(), owner, display)
            if b"\0" in f.read(BINARY_SNIFF):
                raise bad(f"{display} looks like a binary file; it cannot be read as text", "binary")
            f.seek(0)
            for raw in f:
                total += 1
                if total < offset or len(out) >= limit or stopped_at is not None:
                    continue
                line = _number(total, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                if used + len(line) + 1 > MAX_READ_BYTES and out:
                    stopped_at = total
                    continue
                out.append(line)
                used += len(line) + 1
    except OSError as exc:
        raise bad(f"cannot read {display}: {exc.strerror}") from exc
    if offset > 1 and offset > total:
        raise bad(f"offset {offset} is past the end of {display} ({total} lines)")
    result: dict[str, Any] = {
        "content": "\n".join(out),
        "file_size": st.st_size,
        "total_lines": total,
        "lines_read": len(out),
    }
    last = offset + len(out) - 1
    if last < total:
        why = f"the {MAX_READ_BYTES // 1024} KiB per-call limit" if stopped_at is not None else "the line limit"
        result["note"] = (
            f"Showing lines {offset}-{last} of {total} ({why}); call read_file with offset={last + 1} to read more."
        )
    return result


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o644


def _write_temp(path: Path, data: bytes) -> Path:
    """Write `data` next to `path` (same filesystem, so the rename is atomic); return the temp."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".chatd-tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _file_mode(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _make_parents(path: Path, owner: RunAs | None) -> None:
    missing = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in missing:
        give_to(p, owner)


def write_file(path: Path, display: str, content: str, owner: RunAs | None = None) -> None:
    if path.is_dir():
        raise bad(f"{display} is a directory", "is_directory")
    try:
        _make_parents(path, owner)
        tmp = _write_temp(path, content.encode("utf-8"))
        give_to(tmp, owner)
        os.replace(tmp, path)
    except OSError as exc:
        raise bad(f"cannot write {display}: {exc.strerror}") from exc


def _apply(text: str, display: str, index: int, search: str, replace: str) -> str:
    if not search:
        raise bad(f"edit {index} for {display}: search text is empty", "edit_failed")
    count = text.count(search)
    if count == 0 and "\r\n" in text and "\r\n" not in search:
        # A model writes LF; keep a CRLF file CRLF.
        search, replace = search.replace("\n", "\r\n"), replace.replace("\n", "\r\n")
        count = text.count(search)
    if count == 0:
        raise AgentError(409, "edit_failed", f"edit {index} for {display}: search text not found")
    if count > 1:
        raise AgentError(
            409,
            "edit_failed",
            f"edit {index} for {display}: search text occurs {count} times; include more surrounding lines so it matches once",
        )
    return text.replace(search, replace, 1)


def edit_files(confine: Confinement, files: list[dict[str, Any]], owner: RunAs | None = None) -> None:
    """Apply every edit in memory first; write only if all of them apply (all or nothing)."""
    originals: dict[Path, bytes] = {}
    updated: dict[Path, str] = {}
    order: list[tuple[Path, str]] = []
    for f in files:
        display = f["path"]
        path = confine.resolve(display)
        if path not in updated:
            try:
                with path.open("rb") as fh:
                    check_readable_by(fh.fileno(), owner, display)
                    raw = fh.read()
            except FileNotFoundError:
                raise AgentError(404, "not_found", f"file not found: {display}") from None
            except IsADirectoryError:
                raise bad(f"{display} is a directory", "is_directory") from None
            except OSError as exc:
                raise bad(f"cannot read {display}: {exc.strerror}") from exc
            try:
                updated[path] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise bad(f"{display} is not UTF-8 text; it cannot be edited", "binary") from None
            originals[path] = raw
            order.append((path, display))
        text = updated[path]
        for i, e in enumerate(f["edits"], start=1):
            text = _apply(text, display, i, e["search"], e["replace"])
        updated[path] = text
    temps: dict[Path, Path] = {}
    try:
        for path, display in order:
            try:
                temps[path] = _write_temp(path, updated[path].encode("utf-8"))
                give_to(temps[path], owner)
            except OSError as exc:
                raise bad(f"cannot write {display}: {exc.strerror}") from exc
        done: list[Path] = []
        try:
            for path, _ in order:
                os.replace(temps.pop(path), path)
                done.append(path)
        except OSError as exc:
            # A rename failed half-way (rare: the directory changed under us); put back what we changed.
            for path in done:
                with contextlib.suppress(OSError):
                    os.replace(_write_temp(path, originals[path]), path)
            raise bad(f"edit could not be applied and was rolled back: {exc.strerror}") from exc
    finally:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def utf8_end(data: bytes, cut: int) -> int:
    while 0 < cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def utf8_start(data: bytes, cut: int) -> int:
    while 0 < cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut += 1
    return cut
