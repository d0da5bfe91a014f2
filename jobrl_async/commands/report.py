"""`jobrl-async report LOG|- [-o FILE.html]`: one offline HTML page of a run from its JSON log."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..config import Config
from ..report import ReportError, iter_lines, read_logs, render_html

DEFAULT_OUTPUT = "report.html"


def report(args: argparse.Namespace, cfg: Config) -> int:
    """The page goes to -o, else to stdout when that is not a terminal, else to report.html."""
    if args.logs.count("-") > 1:
        raise ReportError("stdin (-) can be read only once")
    with contextlib.ExitStack() as stack:
        sources = [("stdin" if name == "-" else name, iter_lines(stack.enter_context(_open(name))))
                   for name in args.logs]
        run = read_logs(sources)
    title = "jobrl-async run report: " + ", ".join("stdin" if n == "-" else Path(n).name for n in args.logs)
    page = render_html(run, title=title).encode("utf-8")
    target = args.output or ("-" if not sys.stdout.isatty() else DEFAULT_OUTPUT)
    if target == "-":
        sys.stdout.buffer.write(page)
        sys.stdout.flush()
        return 0
    _write(Path(target), page)
    print(f"jobrl-async: wrote {target} ({len(run.steps)} steps, {len(page) / 1e6:.1f} MB)", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _open(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise ReportError(f"cannot read {name}: {e.strerror or e}") from None
    with f:
        yield f


def _write(path: Path, page: bytes) -> None:
    """Written to a temporary file beside it, then renamed: a reader never sees half a page."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(page)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"cannot write {path}: {e.strerror or e}") from None
