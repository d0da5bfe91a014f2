"""`jobrl-async judge check|score` and `bench judge`."""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets as secrets_
import time
from pathlib import Path
from typing import Any

import orjson

from .. import aio
from ..config import Config, Secrets
from ..data import read_context_file, read_text
from ..errors import ConfigError, JudgeError
from ..judge.client import missing_credentials, percentile
from ..judge.stage import Judge, JudgeFailed, example_offer
from ..log import get_logger
from ..records import Context
from ..testing.fake_judge import FakeChatServer


def log() -> Any:
    """The judge's logger, looked up per event: logging may be configured after this import."""
    return get_logger("judge")


MAX_OFFER_FILE_BYTES = 256 * 1024  # offers are cut to a prompt-sized excerpt anyway



def check(args: argparse.Namespace, cfg: Config) -> int:
    """One real round trip to the configured judge; the verdict as one JSON line."""
    secrets = Secrets.from_env()
    if secrets.judge_backend == "none":
        raise ConfigError(missing_credentials(secrets))
    cfg.judge.mode = "llm"  # the check is of the LLM, whatever mode the config runs in
    result = aio.run(_check(cfg, secrets))
    _print(result)
    return 0


async def _check(cfg: Config, secrets: Secrets) -> dict[str, Any]:
    async with Judge(cfg, secrets) as judge:
        return await judge.check()


def score(args: argparse.Namespace, cfg: Config) -> int:
    """Score one offer for one context: `{"criteria": {...}, "reward": R, "flags": [...]}`."""
    context = read_context_file(Path(args.context))
    offer = read_text(Path(args.offer), MAX_OFFER_FILE_BYTES, f"offer file {args.offer}")
    verdict = aio.run(_score(cfg, context, offer))
    _print(verdict.as_dict())
    return 0


async def _score(cfg: Config, context: Context, offer: str) -> Any:
    async with Judge(cfg) as judge:
        try:
            return await judge.score(context, offer)
        except JudgeFailed as e:
            raise JudgeError(f"could not judge the offer: {e.reason}") from None


# ---------------------------------------------------------------- bench judge


def bench(args: argparse.Namespace, cfg: Config) -> int:
    """N offers (LLM mode) through the judge stage against a local server enforcing an RPM quota."""
    if args.offers < 1 or args.rpm < 1 or args.latency_ms < 0:
        raise ConfigError("bench judge needs --offers >= 1, --rpm >= 1 and --latency-ms >= 0")
    key = f"bench-{secrets_.token_hex(16)}"
    cfg.judge.mode, cfg.judge.rpm = "llm", args.rpm
    if not cfg.is_set("judge.tpm"):  # the server enforces requests/min only: keep TPM out of the way
        cfg.judge.tpm = args.rpm * 10_000
    with FakeChatServer(api_key=key, latency_ms=args.latency_ms, rpm=args.rpm) as server:
        secrets = Secrets(openai_api_key=key, openai_base_url=server.openai_base_url)
        figures = aio.run(_bench(cfg, secrets, server, args.offers))
    figures["latency_ms"] = args.latency_ms
    _print(figures)
    return 0


async def _bench(cfg: Config, secrets: Secrets, server: FakeChatServer, n: int) -> dict[str, Any]:
    from ..data import load_bundled

    contexts = load_bundled()
    work = [(c, example_offer(c)) for c in (contexts[i % len(contexts)] for i in range(n))]
    offer_ms: list[float] = []

    async def one(context: Context, offer: str) -> bool:
        started = time.monotonic()
        try:
            await judge.score(context, offer)
        except JudgeFailed:
            return False
        offer_ms.append((time.monotonic() - started) * 1000)
        return True

    async with Judge(cfg, secrets) as judge:
        log().info("bench_judge_start", offers=n, rpm=cfg.judge.rpm, latency_ms=server.latency_ms,
                 max_concurrency=cfg.judge.max_concurrency, burst_s=cfg.judge.burst_s)
        started = time.monotonic()
        ok = await asyncio.gather(*(one(c, o) for c, o in work))
        wall_s = time.monotonic() - started
        stats = judge.stats
    admitted = sorted(r.arrived for r in server.requests if r.status == 200)
    return {
        "offers": n,
        "failed": ok.count(False),
        "calls_per_offer": judge.calls_per_offer,
        "configured_rpm": cfg.judge.rpm,
        "configured_tpm": cfg.judge.tpm,
        "achieved_rpm": round(_rate_per_min(admitted), 1),
        "quota_used": round(_rate_per_min(admitted) / cfg.judge.rpm, 3),
        "http_429": server.http_429,
        "retries": stats.retries,
        "requests": stats.requests,
        "p50_ms": round(stats.percentile(0.5), 1),
        "p95_ms": round(stats.percentile(0.95), 1),
        "offer_p50_ms": round(percentile(offer_ms, 0.5), 1),
        "offer_p95_ms": round(percentile(offer_ms, 0.95), 1),
        "wall_s": round(wall_s, 2),
        "max_concurrency": cfg.judge.max_concurrency,
    }


def _rate_per_min(arrivals: list[float]) -> float:
    """Requests/min between the first and the last admitted arrival (n - 1 gaps)."""
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return math.nan
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60


# ---------------------------------------------------------------- helpers




def _print(obj: Any) -> None:
    print(orjson.dumps(obj).decode(), flush=True)
