"""The one place for logging: structlog + orjson, one JSON object per line on stdout.

Every event has `event`, `level` and `timestamp` (ISO 8601 UTC). A redaction processor replaces
any secret value from the environment (judge keys, AWS secret, W&B key), the user-info part of
URLs (`https://user:password@host`) and anything that looks like a bearer token, wherever it
appears: in a field of any type, nested, or inside an exception's text.
Warnings and stdlib logging from libraries are routed into the same stream.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
import sys
import uuid
import warnings
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson
import structlog

from ..config import secret_values

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 4  # shorter values would blank out ordinary words
# "Bearer <token>", "Authorization: Basic <token>", "api-key: <token>": the token, base64 included.
_BEARER = re.compile(
    r"(?i)(bearer\s+|authorization[\"']?\s*[:=]\s*[\"']?basic\s+|api[-_]?key[\"'=:\s]+)([A-Za-z0-9._~+/=\-]{8,})"
)
# scheme://user:password@host: the whole user-info part (a token is often the user name), up to
# the last @ of the authority (a password may hold an @ of its own: p@ssw0rd).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#]*@")
# user:password@host without a scheme (a proxy setting, a pasted connection string).
_BARE_USERINFO = re.compile(r"(?<![\w/.%+\-])(?!mailto:)[\w.%+\-]+:[^\s/?#]*@(?=[\w\[])")

_secrets: list[str] = []


def refresh_secrets(extra: list[str] | None = None) -> None:
    """Add the environment's secret values, and `extra`, to those redacted.

    Never removes one: a key that a client registered (the judge's, the generator's) stays
    redacted after a later `configure()`.
    """
    values = {*_secrets, *secret_values(), *(v for v in extra or [] if len(v) >= MIN_SECRET_CHARS)}
    _secrets[:] = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """`text` with every known secret, URL credentials and bearer-looking tokens replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _BARE_USERINFO.sub(f"{REDACTED}@", text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def host_of(url: str) -> str:
    """How a log line or an error names a server: host[:port], never its path or user-info."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or url
    return f"{host}:{parts.port}" if parts.port else host


def one_line(text: str, limit: int = 1000) -> str:
    """`text` redacted, on one line, at most `limit` characters: what the CLI prints on stderr."""
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_PLAIN = (bool, int, float, datetime.date, datetime.time, uuid.UUID)  # nothing to hide in these


def redact_value(value: Any) -> Any:
    """`value` as JSON-ready data with secrets redacted, whatever its type.

    orjson would serialise a dataclass field by field (repr=False fields too) and anything
    unknown through `str()`: both would bypass `redact`, so every type is handled here.
    """
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return redact(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # repr=False marks what must not be shown (Secrets' keys): leave it out here too.
        return {f.name: redact_value(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    return redact(str(value))


def _redact_processor(_logger: Any, _name: str, event_dict: dict) -> dict:
    return {k: redact_value(v) for k, v in event_dict.items()}


# Called with each event, after redaction, exactly as the log holds it (the in-run report reads
# the run from these). A listener must be quick and must not change the dict.
_listeners: list[Callable[[dict], None]] = []


def add_listener(listener: Callable[[dict], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[dict], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def _listeners_processor(_logger: Any, _name: str, event_dict: dict) -> dict:
    for listener in tuple(_listeners):
        try:
            listener(event_dict)
        except Exception:  # a listener's bug must never cost the run its log line
            pass
    return event_dict


def _orjson_default(value: Any) -> Any:
    return redact(str(value))  # unreachable after the redaction processor: a second guard


def _render_json(_logger: Any, _name: str, event_dict: dict) -> bytes:
    return orjson.dumps(event_dict, default=_orjson_default, option=orjson.OPT_NON_STR_KEYS)


def configure(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    """Set up structlog, stdlib logging and warnings once, at start-up."""
    refresh_secrets()
    stream = stream or sys.stdout
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
        _listeners_processor,
    ]
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        factory: Any = structlog.PrintLoggerFactory(file=stream)
    else:
        renderer = _render_json
        factory = structlog.BytesLoggerFactory(file=getattr(stream, "buffer", stream))
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _route_stdlib(numeric)


class _ToStructlog(logging.Handler):
    """Sends stdlib log records (botocore, httpx, transformers...) into our stream."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a library's bad format string must not kill the run
            msg = str(record.msg)
        structlog.get_logger(record.name).log(record.levelno, "library_log", logger=record.name, message=msg)


def _route_stdlib(level: int) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(max(level, logging.WARNING))  # libraries are chatty at INFO
    logging.captureWarnings(False)  # re-install even if something replaced showwarning since
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    for noisy in ("werkzeug", "botocore", "urllib3", "httpx", "httpx2", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get_logger(stage: str | None = None, **fields: Any) -> Any:
    """A lazy logger: safe at module level, it follows whatever `configure` set up later."""
    if stage:
        fields = {"stage": stage, **fields}
    return structlog.get_logger(**fields)


refresh_secrets()  # from the first import: a config that fails to load is redacted too


def report_crash(exc: BaseException) -> str:
    """A bug reached the CLI: its traceback goes to the log at error level (redacted, like every
    event) and one redacted line comes back for stderr."""
    if not structlog.is_configured():  # it failed before `configure`: the log is stderr
        configure("json", "info", stream=sys.stderr)
    get_logger("cli").error("unexpected_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
    return one_line(f"unexpected error: {type(exc).__name__}: {exc} (traceback in the log)")
