"""Shared test set-up: uvloop for async tests, and the fixtures of tests/support/."""

from __future__ import annotations

import os

import pytest
import structlog
import uvloop

# Set before torch is imported anywhere: one thread, passive OpenMP wait (see STACK-NOTES).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = [
    "tests.support.s3", "tests.support.judge_fixtures", "tests.support.model", "tests.support.vllm_fixtures",
]


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a developer's real keys, and never reach AWS by accident."""
    for name in list(os.environ):
        if name.startswith(("AZURE_OPENAI_", "OPENAI_", "AWS_", "JOBRL_")) or name in (
            "AZURE_DEPLOYMENT_NAME",
            "WANDB_API_KEY",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(autouse=True)
def _fresh_logging():
    """A CLI test leaves structlog writing to pytest's (then closed) capture: reset after each."""
    yield
    structlog.reset_defaults()
