"""Logging: secrets redacted at the boundary, JSON lines off a terminal, chat/turn/replica/trace context.

Redaction happens twice, at every level: when a record is created (so every handler, including
ones installed by libraries or test harnesses, sees a scrubbed message) and on the formatted
output (tracebacks and anything a library formats itself). A leaf module: every layer may import it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, TextIO

from opentelemetry import trace

REDACTED = "[redacted]"

# Context carried into every record created in a task (tasks copy the context they start in).
chat_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("chatd_chat_id", default=None)
turn_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("chatd_turn", default=None)
replica_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("chatd_replica", default=None)

# Shapes that are secrets wherever they appear. Order matters: header lines first, so that a
# whole `authorization: Basic …` value goes, then the token shapes inside free text.
_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # Header dumps (websockets, h11/httpcore debug): the whole value of a credential header.
    (
        re.compile(r"(?im)\b(authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key|cookie|set-cookie)(\s*[:=]\s*)([^\r\n]+)"),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    # `Bearer <token>` and the WebSocket subprotocol form `bearer.<token>`.
    # A token has a digit or is long: "bearer authentication" in a sentence stays readable.
    (
        re.compile(r"(?i)\b(bearer)( +|\.)(?:(?=[\w.~+/=\-]*\d)[\w.~+/=\-]{6,}|[\w.~+/=\-]{16,})"),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    (re.compile(r"(?i)\b(basic) +(?:(?=[\w+/=]*[\d+/=])[\w+/=]{6,}|[\w+/=]{16,})"), lambda m: f"{m.group(1)} {REDACTED}"),
    # chatd API tokens in any context.
    (re.compile(r"chatd_[A-Za-z0-9_\-]{8,}"), "chatd_" + REDACTED),
    # User-info in URLs: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@'\"<>]+@"), lambda m: f"{m.group(1)}{REDACTED}@"),
    # Credentials in query strings and form bodies.
    (
        re.compile(r"(?i)([?&]|^)(access_token|refresh_token|id_token|client_secret|api_key|apikey|token|key|code|password)=[^&\s'\"]+"),
        lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}",
    ),
]

# Exact values known to be secret (secret key, provider keys, decrypted credentials, the admin
# token). Short values are left out: redacting "abc" everywhere would ruin logs and hide nothing.
_MIN_SECRET = 8
_MAX_SECRETS = 10_000
_secrets: dict[str, None] = {}  # insertion-ordered: the oldest is dropped past the cap
_secrets_lock = threading.Lock()
_secrets_re: re.Pattern[str] | None = None


def register_secret(value: str | bytes | None) -> None:
    """Redact this exact value from every log line from now on."""
    global _secrets_re
    if value is None:
        return
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    text = text.strip()
    if len(text) < _MIN_SECRET:
        return
    with _secrets_lock:
        if text in _secrets:
            return
        _secrets[text] = None
        while len(_secrets) > _MAX_SECRETS:
            del _secrets[next(iter(_secrets))]
        # Compiled at the next log line, not here: decrypting many secrets in a row (a config
        # reload) then costs one compile instead of one per secret.
        _secrets_re = None


def _secrets_pattern() -> re.Pattern[str] | None:
    global _secrets_re
    pattern = _secrets_re
    if pattern is None and _secrets:
        with _secrets_lock:
            if _secrets_re is None and _secrets:
                # Longest first, so a secret that contains another is removed whole.
                _secrets_re = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))
            pattern = _secrets_re
    return pattern


def redact(text: str) -> str:
    """`text` without anything that looks like or is known to be a secret."""
    pattern = _secrets_pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call; logging reports it later, with the original record
        return
    clean = redact(message)
    if clean == message:
        return
    # Keep the argument tuple when redacting each argument is enough: some formatters (uvicorn's
    # access formatter) unpack `record.args`.
    if isinstance(record.args, tuple) and record.args:
        args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        try:
            if redact(str(record.msg) % args) == str(record.msg) % args:
                record.args = args
                record.msg = redact(str(record.msg))
                if record.getMessage() == clean:
                    return
        except (TypeError, ValueError):
            pass
    record.msg, record.args = clean, ()


_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.chat_id = chat_id_var.get()
    record.turn = turn_var.get()
    record.replica = replica_var.get()
    record.trace_id = _trace_id()
    _redact_record(record)
    return record


def _trace_id() -> str | None:
    # The OpenTelemetry span current in this task (a turn's, when tracing is on): its trace id
    # joins the log line to the trace. The API alone (no SDK) never has a valid one.
    ctx = trace.get_current_span().get_span_context()
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid else None


def install_redaction() -> None:
    """Scrub every log record created in this process from now on (idempotent)."""
    if logging.getLogRecordFactory() is not _record_factory:
        logging.setLogRecordFactory(_record_factory)


@contextlib.contextmanager
def log_context(*, chat_id: object = None, turn: object = None) -> Iterator[None]:
    """Records created inside carry this chat and turn (and so do tasks started inside)."""
    tokens = []
    if chat_id is not None:
        tokens.append((chat_id_var, chat_id_var.set(str(chat_id))))
    if turn is not None:
        tokens.append((turn_var, turn_var.set(str(turn))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, replica, chat_id, turn, trace_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("replica", "chat_id", "turn", "trace_id"):
            value = getattr(record, key, None)
            if value is not None:
                event[key] = value
        # Redacted here too: tracebacks carry exception messages (URLs, headers). Each field
        # alone, before encoding: a header pattern must not run past the end of its field.
        event["msg"] = redact(event["msg"])
        if record.exc_info:
            event["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            event["exc"] = redact(record.exc_text)
        if record.stack_info:
            event["stack"] = redact(record.stack_info)
        return json.dumps(event, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: time, level, logger, message, then the chat it concerns."""

    _COLORS: ClassVar[dict[str, str]] = {"DEBUG": "\033[2m", "INFO": "", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}

    def __init__(self, *, color: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        where = " ".join(f"{k}={v}" for k in ("chat_id", "turn", "trace_id") if (v := getattr(record, k, None)) is not None)
        if where:
            head, sep, tail = line.partition("\n")
            line = f"{head}  [{where}]{sep}{tail}"
        line = redact(line)
        if self.color and (color := self._COLORS.get(record.levelname)):
            line = f"{color}{line}\033[0m"
        return line


def configure(level: str = "info", *, stream: TextIO | None = None, json_lines: bool | None = None, replica: object = None) -> logging.Handler:
    """Log to `stream` (stderr): JSON lines when it is not a terminal, text when it is.

    Replaces the root logger's handlers, lets uvicorn's loggers propagate to it (uvicorn must then
    be started with `log_config=None`) and installs redaction."""
    install_redaction()
    stream = stream or sys.stderr
    tty = stream.isatty() if json_lines is None else not json_lines
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(color=tty) if tty else JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # aiosqlite logs every statement at DEBUG (hundreds of lines a second): chatd's own debug
    # lines would drown. CHATD_LOG_LEVEL=debug means chatd's and the protocol libraries' debug.
    logging.getLogger("aiosqlite").setLevel(max(root.level, logging.INFO))
    if replica is not None:
        replica_var.set(str(replica))
    return handler
