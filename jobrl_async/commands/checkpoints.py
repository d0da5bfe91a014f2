"""`jobrl-async checkpoints list URI` (`eval` is in evaluate.py)."""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import orjson

from ..checkpoints import CheckpointInfo, list_checkpoints
from .. import aio
from ..config import Config
from ..errors import CheckpointError
from ..storage import parse_uri


def list_(args: argparse.Namespace, cfg: Config) -> int:
    """A table on a terminal, a JSON list when piped or with --json. An empty (but existing)
    location is not an error; a local path that is missing or not a folder is (a typo)."""
    location = parse_uri(args.uri)
    if location.scheme == "file" and not Path(location.key).is_dir():
        what = "is not a folder" if Path(location.key).exists() else "does not exist"
        raise CheckpointError(f"{args.uri} {what}")
    infos = aio.run(list_checkpoints(args.uri, cfg))
    if not infos:
        print(f"jobrl-async: no checkpoints under {args.uri}", file=sys.stderr)
    if args.json or not sys.stdout.isatty():
        sys.stdout.buffer.write(orjson.dumps([i.as_dict() for i in infos]) + b"\n")
        sys.stdout.flush()
    elif infos:
        print(render_table(infos))
    return 0


def render_table(infos: list[CheckpointInfo]) -> str:
    header = f"{'step':>8}  {'score':>7}  {'size':>9}  {'time':<25}  {'kind':<6}  marks"
    rows = [header]
    for i in infos:
        score = "-" if i.validation_score is None else f"{i.validation_score:.3f}"
        marks = " ".join(m for m, on in (("best", i.is_best), ("latest", i.is_latest)) if on)
        time, kind = escape_controls(i.time), escape_controls(i.kind)
        rows.append(f"{i.step:>8}  {score:>7}  {human_size(i.size):>9}  {time:<25}  {kind:<6}  {marks}")
    return "\n".join(rows)


def escape_controls(text: str) -> str:
    """`text` with control and format characters (escape sequences, bidi overrides, newlines)
    written as \\x.. / \\u....: fields read from a checkpoint never drive the terminal."""
    return "".join(_escape(c) if unicodedata.category(c) in _UNPRINTABLE else c for c in text)


_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"
