"""JSON logging: one object per line with event/level/timestamp, and secrets never leak."""

from __future__ import annotations

import io
import logging
import warnings
from datetime import datetime

import orjson
import pytest

from jobrl_async import log

FAKE_KEY = "sk-fake-7f3a9c1e5b2d4a6f"


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> io.BytesIO:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-4242424242")
    buf = io.BytesIO()
    log.configure("json", "info", stream=buf)
    yield buf
    logging.getLogger().handlers[:] = []


def lines(buf: io.BytesIO) -> list[dict]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def test_every_line_is_a_json_event(stream: io.BytesIO) -> None:
    log.get_logger("judge").info("step", step=3, reward_mean=7.5)
    (event,) = lines(stream)
    assert event["event"] == "step" and event["level"] == "info" and event["stage"] == "judge"
    assert event["step"] == 3
    ts = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert ts.utcoffset().total_seconds() == 0


def test_secrets_are_redacted_everywhere(stream: io.BytesIO) -> None:
    logger = log.get_logger("judge")
    logger.error("call_failed", error=RuntimeError(f"401: key {FAKE_KEY} rejected"),
                 nested={"headers": [f"api-key: {FAKE_KEY}"]}, note="Authorization: Bearer abcdef123456789")
    try:
        raise ValueError(f"boom aws-secret-4242424242 {FAKE_KEY}")
    except ValueError:
        logger.exception("crashed")
    text = stream.getvalue().decode()
    assert FAKE_KEY not in text
    assert "aws-secret-4242424242" not in text
    assert "abcdef123456789" not in text
    assert text.count(log.REDACTED) >= 4
    assert all(isinstance(e, dict) for e in lines(stream))  # still valid JSON


def test_library_logs_and_warnings_join_the_stream(stream: io.BytesIO) -> None:
    logging.getLogger("some.library").warning("disk %s is slow", "sda")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated thing {FAKE_KEY}", UserWarning, stacklevel=1)
    events = lines(stream)
    assert events[0]["event"] == "library_log" and events[0]["message"] == "disk sda is slow"
    assert events[0]["level"] == "warning"
    assert any("deprecated thing" in e.get("message", "") for e in events)
    assert FAKE_KEY not in stream.getvalue().decode()


def test_level_filters(stream: io.BytesIO) -> None:
    log.get_logger().debug("hidden")
    log.get_logger().info("shown")
    assert [e["event"] for e in lines(stream)] == ["shown"]


def test_redact_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-another-secret-value")
    log.refresh_secrets()
    assert log.redact("url?key=sk-another-secret-value&x=1") == f"url?key={log.REDACTED}&x=1"
