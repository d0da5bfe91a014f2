"""Judge-economy measurements: a real in-process run (tiny model, the pipeline) against
quota-shaped fake judges, and `plan`'s prediction for the same configuration.

    .venv/bin/python -m tests.support.judge_server --mode hybrid --calls per_offer --every 5 --steps 5

A server here is the fake Chat Completions judge enforcing RPM and TPM over 1-s windows, TPM
charged at intake as prompt + `max_tokens` (Azure's way), with a latency; the client runs at
95% of it. Printed, as one JSON object: tokens charged per trained step (what the servers
charged, the start-up check excluded), s/step (steady state: the first step excluded), calls,
429s, the share of the TPM quota used while judging, and `plan`'s figures for the same config.

`--rate-headers` makes the servers send `x-ratelimit-*` computed when they answer (as Azure);
`--judge-only N` judges N distinct offers with no model at all (judge-bound by construction,
so the figure is the judge's even on a machine whose CPUs are busy with something else):

    .venv/bin/python -m tests.support.judge_server --judge-only 300 --latency-ms 1500 --rate-headers
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from jobrl_async.commands.plan import plan_figures, plan_inputs
from jobrl_async.config import Config, EndpointConfig, load_config
from jobrl_async.data import load_bundled, split_dataset
from jobrl_async.ops import log
from jobrl_async.pipeline import Pipeline, build
from jobrl_async.testing.fake_judge import FakeChatServer, intake_tokens

KEY = "sk-measure-judge-economy-0000"
CLIENT_SHARE = 0.95


def measured_config(args: argparse.Namespace, servers: list[FakeChatServer], checkpoints: Path) -> Config:
    cfg = load_config(env={}, overrides={
        "model.name": "tiny", "judge.mode": args.mode, "judge.calls": args.calls,
        "training.batch_contexts": args.batch_contexts, "training.attempts": args.attempts,
        "validation.every_steps": args.every, "validation.attempts": 2,
        "validation.max_contexts": args.validation_contexts,
        "generation.max_new_tokens": args.max_new_tokens, "checkpoints.uri": str(checkpoints),
        "checkpoints.latest_every_steps": 0, "pipeline.max_steps": args.steps, "pipeline.resume": False,
        "pipeline.schedule": args.schedule, "judge.max_concurrency": args.concurrency,
        "judge.rpm": int(args.rpm * CLIENT_SHARE), "judge.tpm": int(args.tpm * CLIENT_SHARE),
        "judge.dedup_max_entries": args.dedup, "judge.reasoning_effort": args.effort,
        "judge.price_input_per_mtok": args.prices[0], "judge.price_cached_input_per_mtok": args.prices[1],
        "judge.price_output_per_mtok": args.prices[2],
    })
    if len(servers) > 1:
        cfg.judge.endpoints = [EndpointConfig(name=f"ep{i}", kind="azure", url=s.azure_endpoint, deployment="judge",
                                              api_key_env="MEASURE_JUDGE_KEY", rpm=cfg.judge.rpm, tpm=cfg.judge.tpm)
                               for i, s in enumerate(servers)]
    return cfg


def start_servers(args: argparse.Namespace) -> list[FakeChatServer]:
    return [FakeChatServer(api_key=KEY, deployments=("judge",), rpm=args.rpm, tpm=args.tpm, latency_ms=args.latency_ms,
                           rate_headers=args.rate_headers, family=args.family).start() for _ in range(args.endpoints)]


async def measure_judge(args: argparse.Namespace) -> dict[str, Any]:
    """`args.judge_only` distinct offers through the judge alone: the quota it uses when it never
    waits for the model (from the first admitted call to the last, what the servers charged)."""
    from jobrl_async.config import Secrets
    from jobrl_async.judge.probe import example_offer
    from jobrl_async.judge.stage import Judge, JudgeFailed

    servers = start_servers(args)
    contexts = load_bundled()
    work = [(contexts[i % len(contexts)], example_offer(contexts[i % len(contexts)]) + f"\n<!-- {i} -->")
            for i in range(args.judge_only)]
    try:
        with tempfile.TemporaryDirectory(prefix="jobrl-measure-") as tmp:
            cfg = measured_config(args, servers, Path(tmp) / "ckpt")
            secrets = Secrets(azure_api_key=KEY, azure_endpoint=servers[0].azure_endpoint, azure_deployment="judge")
            async with Judge(cfg, secrets, env={"MEASURE_JUDGE_KEY": KEY}) as judge:
                async def one(context: Any, offer: str) -> bool:
                    try:
                        await judge.score(context, offer)
                    except JudgeFailed:
                        return False
                    return True

                ok = await asyncio.gather(*(one(c, o) for c, o in work))
    finally:
        for s in servers:
            s.stop()
    admitted = sorted((r.arrived, intake_tokens(r.body)) for s in servers for r in s.requests if r.status == 200)
    span = admitted[-1][0] - admitted[0][0]
    tokens = sum(t for _, t in admitted[:-1])  # the last call's tokens fall outside the span
    http_429 = sum(s.http_429 for s in servers)
    calls = sum(len(s.requests) for s in servers)
    return {"judge_only": args.judge_only, "mode": args.mode, "calls": args.calls, "latency_ms": args.latency_ms,
            "rate_headers": args.rate_headers, "endpoints": args.endpoints, "failed": ok.count(False),
            "span_s": round(span, 1), "tpm_quota_used": round(tokens / span * 60 / (args.tpm * args.endpoints), 4),
            "http_429": http_429, "http_429_share": round(http_429 / max(1, calls), 4)}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    servers = start_servers(args)
    os.environ.update({"AZURE_OPENAI_API_KEY": KEY, "AZURE_OPENAI_ENDPOINT": servers[0].azure_endpoint,
                       "AZURE_DEPLOYMENT_NAME": "judge", "MEASURE_JUDGE_KEY": KEY})
    steps: list[dict] = []

    class Steps:
        def on_step(self, fields: dict) -> None:
            steps.append({**fields, "at": time.monotonic()})

    try:
        with tempfile.TemporaryDirectory(prefix="jobrl-measure-") as tmp:
            cfg = measured_config(args, servers, Path(tmp) / "ckpt")
            parts, progress, total = await build(cfg, Path(tmp) / "work")
            # what the start-up check charged is not a step's
            charged0 = sum(s.charged_tokens for s in servers)
            requests0 = sum(len(s.requests) for s in servers)
            from jobrl_async.pipeline.reporting import Observers

            metrics = _StepTap(steps)
            pipeline = Pipeline(parts, progress, asyncio.Event(), total, Observers(metrics=metrics))
            started = time.monotonic()
            await pipeline.run()
            wall = time.monotonic() - started
            await parts.judge.aclose()
    finally:
        for s in servers:
            s.stop()
    if args.steps_out:
        args.steps_out.write_bytes(b"".join(orjson.dumps(s, default=str) + b"\n" for s in steps))
        calls = [{"at": r.arrived, "done": r.finished, "status": r.status, "tokens": intake_tokens(r.body)}
                 for s in servers for r in s.requests]
        args.steps_out.with_suffix(".calls.jsonl").write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in calls))
    served = {k: sum(s.usage_totals[k] for s in servers) for k in ("prompt", "completion", "reasoning", "cached")}
    charged = sum(s.charged_tokens for s in servers) - charged0
    calls = sum(len(s.requests) for s in servers) - requests0
    http_429 = sum(s.http_429 for s in servers)
    step_s = [b["at"] - a["at"] for a, b in zip(steps, steps[1:])]
    n = len(steps)
    contexts = load_bundled()
    split = split_dataset(contexts, cfg.data.validation_fraction, cfg.data.seed)
    planned = plan_figures(plan_inputs(cfg, contexts, len(split.train), len(split.validation), args.latency_ms / 1000))
    s_per_step = statistics.fmean(step_s) if step_s else wall
    tpm_total = args.tpm * args.endpoints
    return {
        "mode": args.mode, "calls": args.calls, "validation_every": args.every, "endpoints": args.endpoints,
        "steps": n, "batch_contexts": args.batch_contexts, "attempts": args.attempts,
        "tokens_per_step": round(charged / n), "calls_per_step": round(calls / n, 1),
        "dedup_hits": sum(s["judge"]["dedup_hits"] for s in steps),
        "s_per_step": round(s_per_step, 2), "wall_s": round(wall, 1),
        "http_429": http_429, "http_429_share": round(http_429 / max(1, calls), 4),
        "tpm_quota_used": round(charged / n / s_per_step * 60 / tpm_total, 3) if tpm_total else None,
        "judge_floor_s": round(charged / n / (tpm_total / 60), 2) if tpm_total else None,
        "plan": {"tokens_per_step": planned["per_step"]["tokens"], "judge_s": planned["per_step"]["judge_s"],
                 "binding_limit": planned["binding_limit"], "usd_per_step": planned["per_step"].get("usd")},
        "family": args.family, "effort": args.effort,
        # the run's own counts (steps' `judge` objects) beside the server's (the start-up check included)
        "reasoning_tokens_per_step": round(sum(s["judge"]["reasoning_tokens"] for s in steps) / n),
        "cached_tokens_per_step": round(sum(s["judge"]["cached_tokens"] for s in steps) / n),
        "usd_per_step": round(sum(s["judge"].get("usd", 0.0) for s in steps) / n, 5),
        "server_usage": served,
        "run_usage": {"reasoning": sum(s["judge"]["reasoning_tokens"] for s in steps),
                      "cached": sum(s["judge"]["cached_tokens"] for s in steps),
                      "tokens_charged": sum(s["judge"]["tokens"] for s in steps)},
    }


class _StepTap:
    """A stand-in for RunMetrics that keeps the step events' fields (their times and `judge`)."""

    def __init__(self, steps: list[dict]) -> None:
        self.steps = steps

    def on_step(self, fields: dict) -> None:
        self.steps.append({**fields, "at": time.monotonic()})

    def on_judge(self, *args: Any) -> None:
        pass

    def on_judge_endpoints(self, *args: Any) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["llm", "hybrid"], default="llm")
    p.add_argument("--calls", choices=["per_criterion", "per_offer"], default="per_criterion")
    p.add_argument("--every", type=int, default=1, help="validation.every_steps")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--endpoints", type=int, default=1)
    p.add_argument("--rpm", type=int, default=6000, help="the server's quota (the client gets 95%%)")
    p.add_argument("--tpm", type=int, default=1_000_000)
    p.add_argument("--latency-ms", type=float, default=800.0)
    p.add_argument("--batch-contexts", type=int, default=10)
    p.add_argument("--attempts", type=int, default=10)
    p.add_argument("--validation-contexts", type=int, default=0, help="0: the whole split (53)")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--dedup", type=int, default=10_000)
    p.add_argument("--schedule", choices=["pipelined", "sequential"], default="pipelined")
    p.add_argument("--family", choices=["classic", "gpt-5", "gpt-5.1", "o1-mini"], default="classic",
                   help="the judge model the fake server answers as (testing/reasoning.py)")
    p.add_argument("--effort", default="lowest", help="judge.reasoning_effort")
    p.add_argument("--prices", type=lambda t: tuple(float(x) for x in t.split(",")), default=(0.25, 0.025, 2.0),
                   help="USD per 1M tokens: input,cached_input,output (default: gpt-5-mini's list prices)")
    p.add_argument("--steps-out", type=Path, help="also write every step event's fields here (JSON Lines)")
    p.add_argument("--rate-headers", action="store_true", help="servers send x-ratelimit-* (at response time)")
    p.add_argument("--judge-only", type=int, default=0, metavar="N", help="judge N offers, no model (judge-bound)")
    args = p.parse_args()
    log.configure("json", "warning")
    run = measure_judge if args.judge_only else measure
    print(orjson.dumps(asyncio.run(run(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
