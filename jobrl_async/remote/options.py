"""What the remote generator is told (`RemoteOptions`) and what it counts (`RemoteStats`).

Invariant: options that passed `__post_init__` are usable as they are: at least one server, each
URL normalised to `http(s)://HOST[:PORT]` (no trailing `/v1`), a model name, bounds that hold.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..ops import log as logging_


def log() -> Any:
    """The generator's logger, looked up per event: logging may be configured after this import."""
    return logging_.get_logger("generator")


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach the servers; the `[generator]` config section maps onto it key for key."""

    urls: tuple[str, ...]
    model: str  # the base model's name on the servers (vLLM's --served-model-name)
    max_concurrency: int = 32  # requests in flight, over all servers (each asks for n samples)
    timeout_s: float = 600.0  # one request: n completions of max_new_tokens
    max_retries: int = 5
    backoff_first_s: float = 0.5  # the first retry waits up to this (full jitter), doubling
    backoff_max_s: float = 30.0
    adapter_root: str = ""  # where adapters are written, as this process sees it
    server_adapter_root: str = ""  # the same folder as the servers see it ("" = same path)
    unload_stale: bool = True

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("generator.urls is empty: give at least one server (--generator URL)")
        object.__setattr__(self, "urls", tuple(normalise_url(u) for u in self.urls))
        if not self.model:
            raise ConfigError("generator.model is empty: name the base model the servers serve")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise ConfigError("generator: max_concurrency must be >= 1, max_retries >= 0 and timeout_s > 0")


@dataclass
class RemoteStats:
    """Counters for metrics and benchmarks."""

    requests: int = 0  # HTTP attempts at /v1/completions
    retries: int = 0
    http_429: int = 0
    completions: int = 0
    tokens: int = 0  # completion tokens received
    loads: int = 0  # adapters loaded on every server
    load_retries: int = 0
    reloads: int = 0  # adapters loaded again on a server that had lost them
    paused: bool = False  # no server in rotation: requests wait for the probe
    pauses: int = 0
    per_server: Counter[str] = field(default_factory=Counter)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))


def normalise_url(url: str) -> str:
    """`http://host:8000` from `http://host:8000/`, `.../v1` or `host:8000`; rejects other schemes."""
    url = url.strip().rstrip("/")
    if "//" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"generator.urls: {url!r} is not http(s)://HOST[:PORT]")
    return url.removesuffix("/v1")
