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
from ..config import Config, EndpointConfig, Secrets
from ..data import read_context_file, read_text
from ..errors import ConfigError, JudgeError
from ..flow.records import Context
from ..judge.client import missing_credentials, percentile
from ..judge.probe import example_offer
from ..judge.stage import Judge, JudgeFailed
from ..ops.log import get_logger
from ..testing.fake_judge import FakeChatServer, intake_tokens


def log() -> Any:
    """The judge's logger, looked up per event: logging may be configured after this import."""
    return get_logger("judge")


MAX_OFFER_FILE_BYTES = 256 * 1024  # offers are cut to a prompt-sized excerpt anyway



def check(args: argparse.Namespace, cfg: Config) -> int:
    """One real round trip to the configured judge; the verdict as one JSON line (one per
    endpoint of a pool: exit 1 when any fails, after checking them all)."""
    secrets = Secrets.from_env()
    if not cfg.judge.endpoints and secrets.judge_backend == "none":
        raise ConfigError(missing_credentials(secrets))
    cfg.judge.mode = "llm"  # the check is of the LLM, whatever mode the config runs in
    if not cfg.judge.endpoints:
        _print(aio.run(_check(cfg, secrets)))
        return 0
    results = aio.run(_check_pool(cfg, secrets))
    for result in results:
        _print(result)
    failed = [r for r in results if not r["ok"]]
    if failed:
        names = ", ".join(f"{r['endpoint_name']} ({r['error']})" for r in failed)
        raise JudgeError(f"{len(failed)} of {len(results)} judge endpoints failed: {names}")
    return 0


async def _check(cfg: Config, secrets: Secrets) -> dict[str, Any]:
    async with Judge(cfg, secrets) as judge:
        return await judge.check()


async def _check_pool(cfg: Config, secrets: Secrets) -> list[dict[str, Any]]:
    async with Judge(cfg, secrets) as judge:
        return await judge.check_endpoints()


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


CLIENT_SHARE = 0.95  # the client's quota as a share of the server's: headroom for clock and network jitter


def bench(args: argparse.Namespace, cfg: Config) -> int:
    """N offers through the judge stage against local servers enforcing RPM (and TPM) per 1-s window."""
    if args.offers < 1 or args.rpm < 1 or args.latency_ms < 0 or args.tpm < 0 or args.endpoints < 1:
        raise ConfigError("bench judge needs --offers >= 1, --rpm >= 1, --tpm >= 0, --latency-ms >= 0 "
                          "and --endpoints >= 1")
    key = f"bench-{secrets_.token_hex(16)}"
    cfg.judge.mode, cfg.judge.calls = args.mode, args.calls
    cfg.judge.rpm = args.rpm if not args.tpm else int(args.rpm * CLIENT_SHARE)
    if args.tpm:
        cfg.judge.tpm = int(args.tpm * CLIENT_SHARE)
    elif not cfg.is_set("judge.tpm"):  # the server enforces requests/min only: keep TPM out of the way
        cfg.judge.tpm = args.rpm * 10_000
    servers = [FakeChatServer(api_key=key, latency_ms=args.latency_ms, rpm=args.rpm, tpm=args.tpm).start()
               for _ in range(args.endpoints)]
    try:
        env = {}
        if args.endpoints > 1:
            cfg.judge.endpoints = [EndpointConfig(name=f"bench-{i}", kind="openai", url=s.openai_base_url,
                                                  api_key_env="JOBRL_BENCH_JUDGE_KEY", rpm=cfg.judge.rpm,
                                                  tpm=cfg.judge.tpm) for i, s in enumerate(servers)]
            env = {"JOBRL_BENCH_JUDGE_KEY": key}
        secrets = Secrets(openai_api_key=key, openai_base_url=servers[0].openai_base_url)
        figures = aio.run(_bench(cfg, secrets, servers, args.offers, env))
    finally:
        for server in servers:
            server.stop()
    figures["latency_ms"] = args.latency_ms
    _print(figures)
    return 0


async def _bench(cfg: Config, secrets: Secrets, servers: list[FakeChatServer], n: int,
                 env: dict[str, str]) -> dict[str, Any]:
    from ..data import load_bundled

    contexts = load_bundled()
    # offers differ by context and by index: every one is paid for (no dedup hits)
    work = [(c, example_offer(c) + f"\n<!-- {i} -->") for i, c in
            enumerate(contexts[i % len(contexts)] for i in range(n))]
    offer_ms: list[float] = []

    async def one(context: Context, offer: str) -> bool:
        started = time.monotonic()
        try:
            await judge.score(context, offer)
        except JudgeFailed:
            return False
        offer_ms.append((time.monotonic() - started) * 1000)
        return True

    judge = Judge(cfg, secrets, env=env)
    async with judge:
        log().info("bench_judge_start", offers=n, rpm=cfg.judge.rpm, tpm=cfg.judge.tpm,
                   latency_ms=servers[0].latency_ms, max_concurrency=cfg.judge.max_concurrency,
                   mode=cfg.judge.mode, calls=cfg.judge.calls, endpoints=len(servers))
        started = time.monotonic()
        ok = await asyncio.gather(*(one(c, o) for c, o in work))
        wall_s = time.monotonic() - started
        stats = judge.stats
    admitted = sorted(r.arrived for s in servers for r in s.requests if r.status == 200)
    server_rpm = servers[0].rpm * len(servers)
    server_tpm = servers[0].tpm * len(servers)
    http_429 = sum(s.http_429 for s in servers)
    return {
        "offers": n,
        "failed": ok.count(False),
        "mode": cfg.judge.mode,
        "calls": cfg.judge.calls,
        "endpoints": len(servers),
        "calls_per_offer": judge.calls_per_offer,
        "tokens_per_offer": round(stats.charged_tokens / n, 1),
        "configured_rpm": cfg.judge.rpm,
        "configured_tpm": cfg.judge.tpm,
        "achieved_rpm": round(_rate_per_min(admitted), 1),
        "quota_used": round(_rate_per_min(admitted) / server_rpm, 3),
        "achieved_tpm": round(_tokens_per_min(servers), 1),
        "tpm_quota_used": round(_tokens_per_min(servers) / server_tpm, 3) if server_tpm else None,
        "http_429": http_429,
        "http_429_share": round(http_429 / max(1, stats.requests), 4),
        "retries": stats.retries,
        "requests": stats.requests,
        "p50_ms": round(stats.percentile(0.5), 1),
        "p95_ms": round(stats.percentile(0.95), 1),
        "offer_p50_ms": round(percentile(offer_ms, 0.5), 1),
        "offer_p95_ms": round(percentile(offer_ms, 0.95), 1),
        "wall_s": round(wall_s, 2),
        "max_concurrency": cfg.judge.max_concurrency,
    }


def _tokens_per_min(servers: list[FakeChatServer]) -> float:
    """Tokens/min charged between the first and the last admitted arrival (the last one's tokens
    fall outside that span): the steady pace, without the start and the final latency."""
    admitted = sorted((r.arrived, intake_tokens(r.body)) for s in servers for r in s.requests if r.status == 200)
    if len(admitted) < 2 or admitted[-1][0] <= admitted[0][0]:
        return math.nan
    return sum(t for _, t in admitted[:-1]) / (admitted[-1][0] - admitted[0][0]) * 60


def _rate_per_min(arrivals: list[float]) -> float:
    """Requests/min between the first and the last admitted arrival (n - 1 gaps)."""
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return math.nan
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60


# ---------------------------------------------------------------- helpers




def _print(obj: Any) -> None:
    print(orjson.dumps(obj).decode(), flush=True)
