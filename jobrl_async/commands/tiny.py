"""`jobrl-async tiny build`: rebuild the shipped tiny model, or check the shipped files against a rebuild."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from ..config import Config
from ..errors import JobrlError


def build(args: argparse.Namespace, cfg: Config) -> int:
    from ..policy.device import configure_threads
    from ..policy.tiny_assets import SHIPPED_DIR, build_tiny, read_manifest

    configure_threads(cfg.model)
    out = Path(args.out) if args.out else SHIPPED_DIR
    if args.out and out.exists():
        raise JobrlError(f"tiny build: --out {out} already exists; name a new folder")
    print(f"jobrl-async: building the tiny model (deterministic; 2-4 minutes on 2 cores) for {out}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".tiny-build-", dir=out.parent if out.parent.is_dir() else None) as tmp:
        manifest = build_tiny(Path(tmp) / "tiny")
        if args.check:
            shipped = read_manifest(SHIPPED_DIR)
            same = shipped.get("content_sha256") == manifest["content_sha256"]
            print(f"jobrl-async: shipped {shipped.get('content_sha256')}, rebuilt {manifest['content_sha256']}: "
                  f"{'identical' if same else 'DIFFERENT (run `jobrl-async tiny build` and commit the files)'}",
                  file=sys.stderr)
            sys.stdout.buffer.write(orjson.dumps({"identical": same, **manifest}) + b"\n")
            return 0 if same else 1
        _replace(Path(tmp) / "tiny", out)
    sys.stdout.buffer.write(orjson.dumps(manifest) + b"\n")
    return 0


def _replace(new: Path, out: Path) -> None:
    """Put `new` at `out`: a rename when `out` is free, else swap, then drop the old folder."""
    if not out.exists():
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old)
