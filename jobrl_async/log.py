"""The one place for logging: structlog + orjson, one JSON object per line on stdout.

Every event has `event`, `level` and `timestamp` (ISO 8601 UTC). A redaction processor replaces
any secret value from the environment (judge keys, AWS secret, W&B key) and anything that looks
like a bearer token, wherever it appears: in a field, nested, or inside an exception's text.
Warnings and stdlib logging from libraries are routed into the same stream.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from typing import Any

import orjson
import structlog

from .config import secret_values

REDACTED = "[REDACTED]"
_BEARER = re.compile(r"(?i)(bearer\s+|api[-_]?key[\"'=:\s]+)([A-Za-z0-9._\-]{8,})")

_secrets: list[str] = []


def refresh_secrets(extra: list[str] | None = None) -> None:
    """Re-read the secret values to redact (call after the environment changes)."""
    values = set(secret_values()) | set(extra or [])
    _secrets[:] = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """`text` with every known secret and bearer-looking token replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def _redact_processor(_logger: Any, _name: str, event_dict: dict) -> dict:
    return {k: _redact_value(v) for k, v in event_dict.items()}


def _orjson_default(value: Any) -> Any:
    return str(value)


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
