"""Fake judge fixtures: the real openai client talks to `jobrl_async.testing.fake_judge` on 127.0.0.1.

`judge_server` is a fresh `FakeChatServer` on 127.0.0.1 (both URL shapes, scriptable faults,
every request recorded). `judge_env` points the environment at it in one shape or the
other, with a distinctive fake key that tests check never leaks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from jobrl_async.testing.fake_judge import FakeChatServer

FAKE_KEY = "sk-FAKE-judge-key-7c1e9d4b2a-must-never-leak"
DEPLOYMENT = "judge-gpt"


@pytest.fixture
def judge_server() -> Iterator[FakeChatServer]:
    with FakeChatServer(api_key=FAKE_KEY, deployments=(DEPLOYMENT,)) as server:
        yield server


@pytest.fixture
def judge_env(judge_server: FakeChatServer, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], FakeChatServer]:
    """`judge_env("azure" | "azure-v1" | "openai")` sets the judge variables for that URL shape."""

    def point(shape: str, key: str = FAKE_KEY, deployment: str = DEPLOYMENT) -> FakeChatServer:
        if shape in ("azure", "azure-v1"):  # the deployments path, or Azure's v1 API
            monkeypatch.setenv("AZURE_OPENAI_API_KEY", key)
            url = judge_server.azure_endpoint + ("/openai/v1" if shape == "azure-v1" else "")
            monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", url)
            monkeypatch.setenv("AZURE_DEPLOYMENT_NAME", deployment)
        elif shape == "openai":
            monkeypatch.setenv("OPENAI_API_KEY", key)
            monkeypatch.setenv("OPENAI_BASE_URL", judge_server.openai_base_url)
        else:
            raise ValueError(f"unknown shape {shape!r}")
        return judge_server

    return point
