"""S3 for tests: moto's server on 127.0.0.1, reset before each test that asks for it.

Fixtures:
    s3_server  (session) the moto server's base URL, e.g. "http://127.0.0.1:40123".
    s3_env     (function) a clean S3 with one bucket; sets AWS_ENDPOINT_URL_S3 and
               AWS_ENDPOINT_URL so any aioboto3/boto3 client in the test goes to moto
               (the fake credentials come from tests/conftest.py). Gives an `S3Env`:
                   .endpoint          the server URL
                   .bucket            "jobrl-test"
                   .uri("ckpt")       "s3://jobrl-test/ckpt"
                   .client()          a plain boto3 S3 client, for assertions
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BUCKET = "jobrl-test"


@dataclass(frozen=True)
class S3Env:
    endpoint: str
    bucket: str = BUCKET

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # imported here: only S3 tests pay for moto

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # verbose=False leaves it chatty
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Env:
    # moto's state is process-global: start every test from an empty S3
    urllib.request.urlopen(urllib.request.Request(f"{s3_server}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    env = S3Env(endpoint=s3_server)
    env.client().create_bucket(Bucket=env.bucket)
    return env


@pytest.fixture(params=["path", "file", "s3"])
def root_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same store three ways: a plain path, a file:// URI and s3:// on the moto server."""
    if request.param == "path":
        return str(tmp_path / "root")
    if request.param == "file":
        return f"file://{tmp_path}/root"
    return request.getfixturevalue("s3_env").uri("runs/root")
