"""An incremental server-sent-events decoder over bytes, read the way the provider SDKs read them.

It follows the openai SDK's decoder (`openai._streaming.SSEDecoder`) rule for rule, so a stream
means the same thing on either path: lines end at CR, LF or CRLF (also split across reads); an
event ends at a blank line, and a blank line dispatches an event only when a field was set since
(a set `id` counts, and is kept across events, as the spec says); `data` lines are joined with
LF; one space after the colon is dropped; comments and unknown fields are ignored. A last line
without its terminator never dispatches.

What differs is only the cost: `data` stays bytes for orjson, and the common line (`data: {...}`
ending in LF) takes one `split` per read instead of a regex, a decode and an object per line.
"""

from __future__ import annotations

import contextlib
import re

_LINE_END = re.compile(rb"\r\n|\r|\n")


class ServerEvent:
    """One dispatched event. `lines` are the raw `data` lines (with their field name), so an error
    can be reported on exactly the bytes the SDK would have decoded; `data` is their joined value."""

    __slots__ = ("error", "event", "lines", "offsets")

    def __init__(self, event: str | None, lines: list[bytes], offsets: list[int], error: Exception | None = None) -> None:
        self.event = event
        self.lines = lines
        self.offsets = offsets
        # A line that failed to decode: raised by the reader in its place in the stream, after
        # the events before it (the SDK decodes lines one by one as it goes).
        self.error = error

    @property
    def data(self) -> bytes:
        if len(self.lines) == 1:
            return self.lines[0][self.offsets[0] :]
        return b"\n".join(line[off:] for line, off in zip(self.lines, self.offsets, strict=True))

    def text(self) -> str:
        """The data as the SDK sees it: each line decoded as UTF-8 on its own (strict), then joined.
        The field name, colon and space are ASCII, so byte and character offsets agree."""
        return "\n".join(line.decode("utf-8")[off:] for line, off in zip(self.lines, self.offsets, strict=True))


class SSEDecoder:
    __slots__ = ("_data", "_event", "_id", "_offsets", "_retry", "_skip_lf", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        # The previous read ended with CR: a LF starting this one is the rest of that CRLF.
        self._skip_lf = False
        self._event: str | None = None
        self._data: list[bytes] = []
        self._offsets: list[int] = []
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._tail:
            chunk = self._tail + chunk
        if 13 in chunk:
            lines = _LINE_END.split(chunk)
            self._skip_lf = chunk[-1] == 13
        else:
            lines = chunk.split(b"\n")
        self._tail = lines.pop()
        out: list[ServerEvent] = []
        for line in lines:
            if not line:
                if self._event or self._data or self._id or self._retry is not None:
                    out.append(ServerEvent(self._event or None, self._data, self._offsets))
                    self._event = None
                    self._data = []
                    self._offsets = []
                    self._retry = None
                continue
            if line.startswith(b"data:"):
                self._data.append(line)
                self._offsets.append(6 if line[5:6] == b" " else 5)
                continue
            try:
                self._field(line)
            except UnicodeDecodeError as exc:
                # Nothing after it is read: the stream fails here.
                out.append(ServerEvent(None, [], [], exc))
                self._tail = b""
                break
        return out

    def _field(self, line: bytes) -> None:
        # Rare lines: decoded as the SDK decodes every line, so invalid UTF-8 fails the same way.
        text = line.decode("utf-8")
        if text.startswith(":"):
            return
        name, _, value = text.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            # `data` without a colon: an empty data line.
            self._data.append(line)
            self._offsets.append(len(line))
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            with contextlib.suppress(TypeError, ValueError):
                self._retry = int(value)

    def finish(self) -> None:
        """The stream ended: a last unterminated line, and the data of an event that was never
        dispatched, are decoded as the SDK decodes every line (so invalid UTF-8 fails the same
        way), but dispatch nothing."""
        tail, self._tail = self._tail, b""
        for line in self._data:
            line.decode("utf-8")
        if tail.startswith(b"data:"):
            tail.decode("utf-8")
        elif tail:
            self._field(tail)
