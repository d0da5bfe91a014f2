"""The command line: the command tree of DESIGN.md, flags over env over the config file.

Exit codes: 0 done, 1 bad input or config (one line on stderr naming the culprit),
2 usage, 130/143 after SIGINT/SIGTERM with a clean shutdown.
Handlers live in `jobrl_async.commands.*` and are imported only when their command runs,
so `config show` or `--help` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable

from . import __version__
from .config import Config, load_config
from .errors import JobrlError

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobrl-async",
        description="Asynchronous RL trainer that teaches a small LLM to write job offers.",
    )
    p.add_argument("--version", action="version", version=f"jobrl-async {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _cmd(sub, "run", "the training daemon", "pipeline:run")
    run.add_argument("--dry-run", action="store_true",
                     help="stub judge, embedded tiny model, bundled dataset, local checkpoints; no network")
    run.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=None,
                        help="continue from the latest checkpoint (default when one exists)")
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="start fresh")
    _model_flag(run)
    run.add_argument("--dataset", help="dataset path or URI (file://, s3://)")
    run.add_argument("--checkpoints", help="checkpoints path or URI")
    run.add_argument("--force", action="store_true",
                     help="take over the checkpoints URI even if another run holds its lease (that run stops)")
    _judge_flag(run)
    run.add_argument("--schedule", choices=["pipelined", "sequential"])
    run.add_argument("--generator", metavar="URL", action="append",
                     help="sample on an OpenAI-compatible server (vLLM); repeat for several")
    run.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    run.add_argument("--metrics-host", help="address for the metrics endpoint (default 127.0.0.1)")
    run.add_argument("--log-format", choices=["json", "console"])

    config = _group(sub, "config", "inspect the configuration")
    _cmd(config, "show", "print the effective configuration, secrets redacted", "config:show")

    data = _group(sub, "data", "inspect and validate datasets")
    count = _cmd(data, "count", "entries, split sizes and distributions", "data:count")
    count.add_argument("source", metavar="FILE|URI", nargs="?", help="dataset (bundled by default)")
    count.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    check = _cmd(data, "check", "load and validate every record", "data:check")
    check.add_argument("--dataset", help="dataset path or URI (bundled by default)")

    judge = _group(sub, "judge", "talk to the judge")
    _cmd(judge, "check", "one real judge round trip, with a clear verdict", "judge:check")
    score = _cmd(judge, "score", "score one offer, print criteria and reward as JSON", "judge:score")
    score.add_argument("--context", required=True, help="JSON file: a context, bare or as a record")
    score.add_argument("--offer", required=True, help="file with the offer text")
    _judge_flag(score)

    gen = _cmd(sub, "generate", "write one offer for a context", "generate:generate")
    gen.add_argument("--context", required=True, help="JSON file: a context, bare or as a record")
    gen.add_argument("--checkpoint", help="checkpoint URI whose adapter to load")
    _model_flag(gen)

    ev = _cmd(sub, "eval", "validation score of a checkpoint", "evaluate:evaluate")
    ev.add_argument("--checkpoint", required=True, help="checkpoint URI (a step folder or the root)")
    _judge_flag(ev)
    _model_flag(ev)

    ckpts = _group(sub, "checkpoints", "inspect checkpoints")
    ls = _cmd(ckpts, "list", "the checkpoints under a URI, best and latest marked", "checkpoints:list_")
    ls.add_argument("uri", metavar="URI")
    ls.add_argument("--json", action="store_true", help="print JSON even on a terminal")

    rep = _cmd(sub, "report", "one offline HTML page of a run from its JSON log", "report:report")
    rep.add_argument("logs", metavar="LOG|-", nargs="+",
                     help="the run's JSON log (the stdout of `run`), - for stdin; the logs of a resumed run are joined")
    rep.add_argument("-o", "--output", metavar="FILE.html",
                     help="where to write the page (default: stdout when it is not a terminal, else report.html)")

    tiny = _group(sub, "tiny", "the embedded tiny model shipped with the package")
    tb = _cmd(tiny, "build", "rebuild the tiny model (deterministic, 2-4 minutes on 2 cores)", "tiny:build")
    tb.add_argument("--out", metavar="DIR",
                    help="write the new folder there (default: replace the shipped folder of this checkout)")
    tb.add_argument("--check", action="store_true",
                    help="build into a temporary folder and compare with the shipped files; exit 1 when they differ")

    bench = _group(sub, "bench", "benchmarks; the last stdout line is one JSON object")
    bg = _cmd(bench, "generate", "batched generation throughput", "generate:bench")
    bg.add_argument("--batch", type=int, default=100)
    bg.add_argument("--max-new-tokens", type=int, default=128)
    bg.add_argument("--attempts", type=int, default=10, help="sequences per context (a GRPO group)")
    bg.add_argument("--repeats", type=int, default=3,
                    help="timed runs of each engine, interleaved; the best counts (a shared machine only slows)")
    _model_flag(bg, default="tiny")
    bj = _cmd(bench, "judge", "judge stage against a local rate-limited server", "judge:bench")
    bj.add_argument("--offers", type=int, default=200)
    bj.add_argument("--latency-ms", type=float, default=300.0)
    bj.add_argument("--rpm", type=int, default=600)
    bj.add_argument("--tpm", type=int, default=0, help="the server's tokens/min quota (0: none; the client gets 95%%)")
    bj.add_argument("--mode", choices=["llm", "hybrid"], default="llm", help="which criteria the LLM judges")
    bj.add_argument("--calls", choices=["per_criterion", "per_offer"], default="per_criterion")
    bj.add_argument("--endpoints", type=int, default=1, help="a pool of N equal local servers")
    pl = _cmd(sub, "plan", "what a run will cost in judge calls, tokens and hours, before it starts", "plan:plan")
    pl.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    pl.add_argument("--latency-ms", type=float, default=800.0, help="the judge's latency per call (for the concurrency bound)")
    bl = _cmd(bench, "learn", "learner step throughput at the seed's shape", "learn:bench")
    _model_flag(bl, default="tiny")
    bl.add_argument("--trajectories", type=int, default=100)
    bl.add_argument("--max-new-tokens", type=int, default=256)
    bp = _cmd(bench, "pipeline", "sequential vs pipelined on the same work", "pipeline:bench")
    bp.add_argument("--steps", type=int, default=4)
    bp.add_argument("--judge-latency-ms", type=float, default=600.0,
                    help="simulated judge latency per call (600: balanced with tiny on 2 CPU cores)")
    bp.add_argument("--judge-concurrency", type=int, default=64)
    bp.add_argument("--max-new-tokens", type=int, default=160)
    bp.add_argument("--no-validation", action="store_true")
    _model_flag(bp, default="tiny")
    blr = _cmd(bench, "learning", "does the overlap cost learning? validation score per step and per second, "
               "sequential vs pipelined over several seeds", "learning:bench")
    blr.add_argument("--steps", type=int, help="training steps per run (default 16; --quick 6)")
    blr.add_argument("--seeds", type=int, help="runs per schedule, each from the same start (default 3; --quick 2)")
    blr.add_argument("--judge-latency-ms", type=float, default=600.0,
                     help="simulated judge latency per call (600, as bench pipeline)")
    blr.add_argument("--schedules", default="sequential,pipelined", metavar="S,S",
                     help="sequential (always), pipelined, pipelined-behaviour, pipelined-lag2")
    blr.add_argument("--max-new-tokens", type=int, help="default 192")
    blr.add_argument("--quick", action="store_true", help="a smaller size: under 10 minutes on 2 CPU cores")
    blr.add_argument("-o", "--output", metavar="FILE.html", default="learning.html",
                     help="where to write the page (default learning.html)")
    return p


def _group(sub: Any, name: str, help_: str) -> Any:
    g = sub.add_parser(name, help=help_, description=help_)
    return g.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")


def _cmd(sub: Any, name: str, help_: str, handler: str) -> argparse.ArgumentParser:
    c = sub.add_parser(name, help=help_, description=help_)
    c.set_defaults(handler=handler)
    c.add_argument("--config", metavar="FILE", help="TOML configuration file")
    return c


def _model_flag(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--model", metavar="NAME|PATH", default=default,
                   help="hub id, local folder, or 'tiny' (the embedded model)")


def _judge_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", choices=["stub", "llm", "hybrid"], help="judge mode")


# Flags that override config keys, by argparse dest.
FLAG_KEYS = {
    "max_steps": "pipeline.max_steps",
    "resume": "pipeline.resume",
    "model": "model.name",
    "dataset": "data.dataset",
    "checkpoints": "checkpoints.uri",
    "judge": "judge.mode",
    "schedule": "pipeline.schedule",
    "metrics_port": "metrics.port",
    "metrics_host": "metrics.host",
    "log_format": "logging.format",
}


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {key: getattr(args, dest, None) for dest, key in FLAG_KEYS.items()}
    urls = [u.strip() for arg in getattr(args, "generator", None) or [] for u in arg.split(",") if u.strip()]
    if urls:
        overrides.update({"generator.backend": "vllm", "generator.urls": urls})
    return load_config(getattr(args, "config", None), overrides=overrides)


def _handler(spec: str) -> Callable[[argparse.Namespace, Config], int]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(f"jobrl_async.commands.{module}"), name)


# Commands whose stdout is a document (JSON, TOML, an offer): their logs go to stderr.
DOCUMENT_COMMANDS = {"config:show", "data:count", "judge:score", "generate:generate", "evaluate:evaluate",
                     "checkpoints:list_", "report:report", "plan:plan", "tiny:build"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    from .ops import log

    try:
        cfg = config_from_args(args)
        stream = sys.stderr if args.handler in DOCUMENT_COMMANDS else sys.stdout
        log.configure(cfg.logging.format, cfg.logging.level, stream=stream)
        for key, why in cfg.removed.items():
            log.get_logger("config").warning("config_key_removed", key=key, reason=why)
        return _handler(args.handler)(args, cfg)
    except JobrlError as e:
        print(f"jobrl-async: {log.one_line(str(e))}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jobrl-async data count | head`
        return EXIT_OK
    except Exception as e:  # a bug: one redacted line here, the traceback (redacted) in the log
        print(f"jobrl-async: {log.report_crash(e)}", file=sys.stderr)
        return EXIT_INPUT
