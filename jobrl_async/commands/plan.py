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
from ..flow.records import Context
from ..judge.dialect import TYPICAL_REASONING, typical_allowance
from ..judge.prompts import build_messages, build_offer_messages, estimate_tokens, offer_max_tokens
from ..judge.probe import example_offer
from ..judge.stage import llm_criteria
from ..judge.usage import Prices, Usage
from ..producer import steps_per_epoch

SAMPLE_CONTEXTS = 50  # contexts whose prompts are built (spread over the dataset)
ANSWER_TOKENS_PER_VERDICT = 40  # what one verdict takes as written (its budget is larger)
CACHE_MIN_TOKENS = 1024  # OpenAI's and Azure's prompt caching: prefixes from 1,024 tokens


@dataclass(frozen=True)
class PlanInputs:
    """Everything the arithmetic needs, from the config and the prompts."""

    calls_per_offer: int
    tokens_per_offer: float  # charged at intake: prompt + max_tokens, summed over the offer's calls
    train_offers: int  # per step: batch_contexts x attempts
    validation_offers: int  # per round: contexts x validation attempts
    validation_every: int  # 0: never
    rpm: float  # the pool's sum; 0: no quota (a local server)
    tpm: float
    concurrency: int  # calls in flight, the pool's sum
    latency_s: float
    n_train: int
    batch_contexts: int
    epochs: int
    max_steps: int  # 0: the epochs decide
    usd_per_offer: float | None = None  # None: no prices configured
    reasoning_allowance: int = 0  # reasoning tokens reserved per call on top of the answer's budget


def plan_figures(p: PlanInputs) -> dict[str, Any]:
    """Per step and for the whole run: calls, tokens, judge-bound seconds and the binding limit."""
    validation_per_step = p.validation_offers / p.validation_every if p.validation_every else 0.0
    offers = p.train_offers + validation_per_step
    calls = offers * p.calls_per_offer
    tokens = offers * p.tokens_per_offer
    bounds = {
        "rpm": calls / (p.rpm / 60.0) if p.rpm > 0 else 0.0,  # 0: no quota binds
        "tpm": tokens / (p.tpm / 60.0) if p.tpm > 0 else 0.0,
        "concurrency": calls * p.latency_s / p.concurrency,
    }
    binding = max(bounds, key=lambda k: bounds[k])
    per_epoch = steps_per_epoch(p.n_train, p.batch_contexts)
    steps = per_epoch * p.epochs
    if p.max_steps:
        steps = min(steps, p.max_steps)
    figures: dict[str, Any] = {
        "per_step": {"offers": round(offers, 1), "calls": round(calls, 1), "tokens": round(tokens),
                     "judge_s": round(bounds[binding], 2),
                     "bounds_s": {k: round(v, 2) for k, v in bounds.items()}},
        "binding_limit": binding,
        "per_offer": {"calls": p.calls_per_offer, "tokens": round(p.tokens_per_offer, 1),
                      "reasoning_allowance_per_call": p.reasoning_allowance},
        "steps_per_epoch": per_epoch,
        "run": {"steps": steps, "tokens": round(tokens * steps), "judge_hours": round(bounds[binding] * steps / 3600, 2)},
    }
    if p.usd_per_offer is not None:
        figures["per_step"]["usd"] = round(offers * p.usd_per_offer, 4)
        figures["per_offer"]["usd"] = round(p.usd_per_offer, 6)
        figures["run"]["usd"] = round(offers * p.usd_per_offer * steps, 2)
    return figures


@dataclass(frozen=True)
class OfferCost:
    """One offer's judging on the real prompts, summed over its calls (means over the contexts)."""

    prompt: float  # prompt tokens (estimated as the limiter does)
    budget: float  # reply budgets charged at intake: answers plus reasoning allowances
    cached: float  # prompt tokens a server's prefix cache would serve
    output: float  # tokens billed as output: the answers as written plus the reasoning

    @property
    def charged(self) -> float:
        return self.prompt + self.budget

    def usd(self, prices: Prices) -> float:
        return prices.usd(Usage(round(self.prompt), round(self.output), 0, round(self.cached)))


def reasoning_assumed(cfg: Config) -> str | None:
    """The effort plan assumes: None for the classic dialect; `auto` assumes a reasoning model
    (today's default judges are), at the lowest effort a gpt-5 model takes (`minimal`)."""
    j = cfg.judge
    if j.dialect == "classic":
        return None
    return "minimal" if j.reasoning_effort == "lowest" else j.reasoning_effort


def offer_cost(cfg: Config, contexts: list[Context], allowance: int, reasoning: float) -> OfferCost:
    """`allowance`: reasoning tokens reserved per call; `reasoning`: those a call spends on average."""
    names = llm_criteria(cfg.judge.mode)
    if not names:
        return OfferCost(0.0, 0.0, 0.0, 0.0)
    per: list[OfferCost] = []
    for c in contexts:
        offer = example_offer(c)
        if cfg.judge.calls == "per_offer":
            calls = [(build_offer_messages(names, c, offer), offer_max_tokens(cfg.judge.max_tokens_per_offer,
                                                                              len(names)), len(names))]
        else:
            calls = [(build_messages(n, c, offer), cfg.judge.max_tokens, 1) for n in names]
        per.append(OfferCost(
            prompt=sum(estimate_tokens(m, 0) for m, _, _ in calls),
            budget=sum(budget + allowance for _, budget, _ in calls),
            cached=sum(cacheable_prefix(m) for m, _, _ in calls),
            output=sum(ANSWER_TOKENS_PER_VERDICT * n + reasoning for _, _, n in calls)))
    return OfferCost(*(statistics.fmean(getattr(o, k) for o in per) for k in ("prompt", "budget", "cached", "output")))


def allowance_assumed(cfg: Config) -> int:
    """Reasoning tokens reserved per call at the effort `plan` assumes (0 for a classic model)."""
    effort = reasoning_assumed(cfg)
    return typical_allowance(effort, cfg.judge.max_reasoning_tokens) if effort else 0


def tokens_per_offer(cfg: Config, contexts: list[Context]) -> float:
    """The mean intake charge of one offer's judging, on the real prompts for these contexts."""
    return offer_cost(cfg, contexts, allowance_assumed(cfg), 0.0).charged


def cacheable_prefix(messages: list[dict[str, str]]) -> int:
    """Tokens of the system message a prefix cache serves (it is the same for every offer):
    nothing under 1,024 tokens, then in steps of 128 (OpenAI and Azure)."""
    tokens = estimate_tokens(messages[:1], 0)
    return 0 if tokens < CACHE_MIN_TOKENS else CACHE_MIN_TOKENS + (tokens - CACHE_MIN_TOKENS) // 128 * 128


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
    allowance = allowance_assumed(cfg)
    cost = offer_cost(cfg, sample, allowance, TYPICAL_REASONING.get(reasoning_assumed(cfg) or "", 0.0))
    prices = Prices(j.price_input_per_mtok, j.price_cached_input_per_mtok, j.price_output_per_mtok)
    return PlanInputs(
        calls_per_offer=calls_per_offer(j.mode, j.calls, j.stub_latency_ms) if j.mode != "stub" else 0,
        tokens_per_offer=cost.charged,
        usd_per_offer=cost.usd(prices) if prices.known else None,
        reasoning_allowance=allowance,
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
            "dialect": j.dialect, "reasoning_effort_assumed": reasoning_assumed(cfg),
            "reasoning_allowance": p.reasoning_allowance,
            "attempts": cfg.training.attempts, "validation_attempts": cfg.validation.attempts,
            "batch_contexts": cfg.training.batch_contexts, "max_tokens": j.max_tokens,
            "endpoints": [e.name for e in j.endpoints] or ["(standard variables)"],
            "rpm": p.rpm, "tpm": p.tpm, "concurrency": p.concurrency, "latency_ms": latency_ms,
            "epochs": cfg.training.epochs}


def render_table(f: dict[str, Any]) -> str:
    s, step, run = f["settings"], f["per_step"], f["run"]
    effort = s.get("reasoning_effort_assumed")
    reasoning = (f"; assumed a reasoning model at effort {effort}: +{s['reasoning_allowance']:,} tokens "
                 "reserved per call (judge.dialect = classic for a classic model)" if effort else "")
    rows = [
        ("judge", f"{s['mode']}, {s['calls']}, max_tokens {s['max_tokens']}{reasoning}"),
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
    if "usd" in run:
        rows.append(("cost", f"${step['usd']:,.4f} per step, ${run['usd']:,.2f} for the run (configured prices)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
