"""`jobrl-async plan`: what a run will cost in judge calls, tokens and hours, before it starts.

The real prompts are built for a sample of the dataset's contexts with a template offer (a
well-formed one: a trained policy's offers are about that size), so the tokens are what the
server will charge at intake (prompt + `max_tokens`, the same estimate the limiter uses). The
arithmetic is pure (`plan_figures`); the judge-bound time of a step is set by the binding limit:

    judge_s = max(calls / (rpm / 60), tokens / (tpm / 60), calls x latency / concurrency)

summed over the pool's endpoints. Dedup hits are not predicted (they depend on what the
policy writes); a run that repeats offers pays less than planned.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from .. import aio
from ..config import Config
from ..data import load_dataset, split_dataset
from ..judge.prompts import build_messages, build_offer_messages, estimate_tokens, offer_max_tokens
from ..judge.stage import example_offer, llm_criteria
from ..producer import steps_per_epoch
from ..records import Context

SAMPLE_CONTEXTS = 50  # contexts whose prompts are built (spread over the dataset)


@dataclass(frozen=True)
class PlanInputs:
    """Everything the arithmetic needs, from the config and the prompts."""

    calls_per_offer: int
    tokens_per_offer: float  # charged at intake: prompt + max_tokens, summed over the offer's calls
    train_offers: int  # per step: batch_contexts x attempts
    validation_offers: int  # per round: contexts x validation attempts
    validation_every: int  # 0: never
    rpm: float  # the pool's sum
    tpm: float
    concurrency: int  # calls in flight, the pool's sum
    latency_s: float
    n_train: int
    batch_contexts: int
    epochs: int
    max_steps: int  # 0: the epochs decide


def plan_figures(p: PlanInputs) -> dict[str, Any]:
    """Per step and for the whole run: calls, tokens, judge-bound seconds and the binding limit."""
    validation_per_step = p.validation_offers / p.validation_every if p.validation_every else 0.0
    offers = p.train_offers + validation_per_step
    calls = offers * p.calls_per_offer
    tokens = offers * p.tokens_per_offer
    bounds = {
        "rpm": calls / (p.rpm / 60.0),
        "tpm": tokens / (p.tpm / 60.0),
        "concurrency": calls * p.latency_s / p.concurrency,
    }
    binding = max(bounds, key=lambda k: bounds[k])
    per_epoch = steps_per_epoch(p.n_train, p.batch_contexts)
    steps = per_epoch * p.epochs
    if p.max_steps:
        steps = min(steps, p.max_steps)
    return {
        "per_step": {"offers": round(offers, 1), "calls": round(calls, 1), "tokens": round(tokens),
                     "judge_s": round(bounds[binding], 2),
                     "bounds_s": {k: round(v, 2) for k, v in bounds.items()}},
        "binding_limit": binding,
        "per_offer": {"calls": p.calls_per_offer, "tokens": round(p.tokens_per_offer, 1)},
        "steps_per_epoch": per_epoch,
        "run": {"steps": steps, "tokens": round(tokens * steps), "judge_hours": round(bounds[binding] * steps / 3600, 2)},
    }


def tokens_per_offer(cfg: Config, contexts: list[Context]) -> float:
    """The mean intake charge of one offer's judging, on the real prompts for these contexts."""
    names = llm_criteria(cfg.judge.mode)
    if not names:
        return 0.0
    per: list[float] = []
    for c in contexts:
        offer = example_offer(c)
        if cfg.judge.calls == "per_offer":
            budget = offer_max_tokens(cfg.judge.max_tokens_per_offer, len(names))
            per.append(estimate_tokens(build_offer_messages(names, c, offer), budget))
        else:
            per.append(sum(estimate_tokens(build_messages(n, c, offer), cfg.judge.max_tokens) for n in names))
    return statistics.fmean(per)


def plan_inputs(cfg: Config, contexts: list[Context], n_train: int, n_validation: int,
                latency_s: float) -> PlanInputs:
    from ..judge.stage import calls_per_offer, judge_workers

    sample = contexts[:: max(1, len(contexts) // SAMPLE_CONTEXTS)][:SAMPLE_CONTEXTS]
    j = cfg.judge
    endpoints = j.endpoints
    rpm = sum(e.rpm for e in endpoints) if endpoints else j.rpm
    tpm = sum(e.tpm for e in endpoints) if endpoints else j.tpm
    concurrency = judge_workers(j)  # what the pipeline starts
    val_contexts = min(n_validation, cfg.validation.max_contexts) if cfg.validation.max_contexts else n_validation
    return PlanInputs(
        calls_per_offer=calls_per_offer(j.mode, j.calls, j.stub_latency_ms) if j.mode != "stub" else 0,
        tokens_per_offer=tokens_per_offer(cfg, sample),
        train_offers=cfg.training.batch_contexts * cfg.training.attempts,
        validation_offers=val_contexts * cfg.validation.attempts if val_contexts else 0,
        validation_every=cfg.validation.every_steps,
        rpm=rpm, tpm=tpm, concurrency=concurrency, latency_s=latency_s,
        n_train=n_train, batch_contexts=cfg.training.batch_contexts, epochs=cfg.training.epochs,
        max_steps=cfg.pipeline.max_steps,
    )


def plan(args: argparse.Namespace, cfg: Config) -> int:
    dataset = aio.run(load_dataset(cfg.data.dataset, cfg.storage, cfg.data.max_records))
    split = split_dataset(dataset.contexts, cfg.data.validation_fraction, cfg.data.seed)
    inputs = plan_inputs(cfg, dataset.contexts, len(split.train), len(split.validation), args.latency_ms / 1000)
    figures = {**plan_figures(inputs), "settings": _settings(cfg, inputs, args.latency_ms)}
    if args.json or not sys.stdout.isatty():
        sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
    else:
        print(render_table(figures))
    return 0


def _settings(cfg: Config, p: PlanInputs, latency_ms: float) -> dict[str, Any]:
    j = cfg.judge
    return {"mode": j.mode, "calls": j.calls, "validation_every_steps": cfg.validation.every_steps,
            "attempts": cfg.training.attempts, "validation_attempts": cfg.validation.attempts,
            "batch_contexts": cfg.training.batch_contexts, "max_tokens": j.max_tokens,
            "endpoints": [e.name for e in j.endpoints] or ["(standard variables)"],
            "rpm": p.rpm, "tpm": p.tpm, "concurrency": p.concurrency, "latency_ms": latency_ms,
            "epochs": cfg.training.epochs}


def render_table(f: dict[str, Any]) -> str:
    s, step, run = f["settings"], f["per_step"], f["run"]
    rows = [
        ("judge", f"{s['mode']}, {s['calls']}, max_tokens {s['max_tokens']}"),
        ("quota", f"{s['rpm']:,.0f} RPM, {s['tpm']:,.0f} TPM, {s['concurrency']} in flight "
                  f"({len(s['endpoints'])} endpoint(s)), latency {s['latency_ms']:g} ms"),
        ("per offer", f"{f['per_offer']['calls']} call(s), {f['per_offer']['tokens']:,.0f} tokens charged"),
        ("per step", f"{step['offers']:g} offers, {step['calls']:,.0f} calls, {step['tokens']:,.0f} tokens"),
        ("judge time", f"{step['judge_s']:,.1f} s/step, bound by {f['binding_limit']} "
                       f"(rpm {step['bounds_s']['rpm']:g} s, tpm {step['bounds_s']['tpm']:g} s, "
                       f"concurrency {step['bounds_s']['concurrency']:g} s)"),
        ("run", f"{run['steps']:,} steps ({f['steps_per_epoch']:,} per epoch x {s['epochs']}), "
                f"{run['tokens']:,} tokens, {run['judge_hours']:,.2f} h of judging"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
