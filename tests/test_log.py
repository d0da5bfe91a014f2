"""JSON logging: one object per line with event/level/timestamp, and secrets never leak."""

from __future__ import annotations

import io
import logging
import warnings
from datetime import datetime

import orjson
import pytest

from jobrl_async.ops import log

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


def test_values_of_every_type_are_redacted(stream: io.BytesIO) -> None:
    from dataclasses import dataclass, field
    from pathlib import Path

    from jobrl_async.config import Secrets

    @dataclass
    class Endpoint:
        url: str
        key: str = field(default="", repr=False)

    class Opaque:
        def __str__(self) -> str:
            return f"Opaque(token={FAKE_KEY})"

    log.get_logger("judge").info(
        "shapes", endpoint=Endpoint("https://bob:pw-in-url-991@judge.example/v1", "unlisted-key-55555"),
        path=Path(f"/tmp/{FAKE_KEY}/x"), raw=f"key {FAKE_KEY}".encode(), opaque=Opaque(),
        names={FAKE_KEY, "b"}, keyed={f"{FAKE_KEY}": 1}, secrets=Secrets(azure_api_key="unlisted-az-key-777"),
    )
    text = stream.getvalue().decode()
    for leaked in (FAKE_KEY, "pw-in-url-991", "unlisted-key-55555", "unlisted-az-key-777"):
        assert leaked not in text
    (event,) = lines(stream)
    assert event["endpoint"] == {"url": f"https://{log.REDACTED}@judge.example/v1"}  # repr=False left out
    assert event["path"] == f"/tmp/{log.REDACTED}/x" and event["raw"] == f"key {log.REDACTED}"
    assert event["opaque"] == f"Opaque(token={log.REDACTED})" and log.REDACTED in event["names"]


def test_url_credentials_and_base64_bearer_tokens_are_redacted() -> None:
    assert log.redact("POST https://alice:s3cr3t@gpu-1:8000/v1/completions failed") == (
        f"POST https://{log.REDACTED}@gpu-1:8000/v1/completions failed")
    assert log.redact("clone https://ghp_token0123456@example.com/r.git") == f"clone https://{log.REDACTED}@example.com/r.git"
    assert log.redact("s3://bucket/key@v2 and mailto:me@example.com") == "s3://bucket/key@v2 and mailto:me@example.com"
    token = "eyJhbGciOi/JIUz+I1NiJ9=="
    assert log.redact(f"Authorization: Bearer {token} sent") == f"Authorization: Bearer {log.REDACTED} sent"
    assert log.redact("Authorization: Basic dXNlcjpwYXNzd29yZA==") == f"Authorization: Basic {log.REDACTED}"
    assert log.redact("some basic information") == "some basic information"


def test_registered_keys_survive_a_later_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    log.refresh_secrets(["key-registered-by-a-client-1234"])
    log.configure("json", "info", stream=io.BytesIO())  # re-reads the environment: must not forget it
    assert log.redact("x key-registered-by-a-client-1234 y") == f"x {log.REDACTED} y"
    log.refresh_secrets([""])  # nothing too short to be a secret is registered: text stays intact
    assert log.redact("abc") == "abc"
    logging.getLogger().handlers[:] = []


@pytest.mark.parametrize("name", ["HUGGING_FACE_HUB_TOKEN", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN", "HF_TOKEN"])
def test_token_variables_are_redacted(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, f"value-of-{name.lower()}-42")
    log.refresh_secrets()
    assert log.redact(f"token value-of-{name.lower()}-42 here") == f"token {log.REDACTED} here"


def test_judge_endpoint_passwords_are_redacted_without_their_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://svc:endpoint-pass-8080@llm.internal/v1")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://az:azure-pass-9090@res.openai.azure.com")
    log.refresh_secrets()
    assert log.redact("auth failed for endpoint-pass-8080 / azure-pass-9090") == (
        f"auth failed for {log.REDACTED} / {log.REDACTED}")


def test_a_crash_is_logged_with_its_traceback_and_returned_as_one_line(stream: io.BytesIO) -> None:
    try:
        raise RuntimeError(f"bad state\nwith key {FAKE_KEY}")
    except RuntimeError as e:
        line = log.report_crash(e)
    assert line == f"unexpected error: RuntimeError: bad state with key {log.REDACTED} (traceback in the log)"
    (event,) = lines(stream)
    assert event["event"] == "unexpected_error" and event["level"] == "error"
    assert "Traceback" in event["exception"] and FAKE_KEY not in stream.getvalue().decode()


def test_url_passwords_with_an_at_sign_and_without_a_scheme_are_redacted_whole() -> None:
    assert log.redact("GET https://user:p@ssw0rd@host/v1 failed") == f"GET https://{log.REDACTED}@host/v1 failed"
    assert log.redact("proxy svc:pw-77@proxy.internal:3128 refused") == f"proxy {log.REDACTED}@proxy.internal:3128 refused"
    assert log.redact("user:p@ss@host") == f"{log.REDACTED}@host"
    for plain in ("mail bob@example.com", "at 12:30 ok", "s3://bucket/key@v2", "mailto:me@example.com"):
        assert log.redact(plain) == plain


def test_secrets_are_registered_from_the_first_import() -> None:
    """A config that fails to load is reported before `configure` runs: the environment's keys
    are redacted from the first import of the logging module."""
    import os
    import subprocess
    import sys

    key = "sk-registered-at-import-31337"
    code = "from jobrl_async.ops import log; print(log.one_line('bad config near ' + %r))" % key
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OPENAI_API_KEY": key}).stdout
    assert out.strip() == f"bad config near {log.REDACTED}"
