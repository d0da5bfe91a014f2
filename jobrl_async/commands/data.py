"""`jobrl-async data count|check`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from .. import aio
from ..config import Config
from ..data import Dataset, dataset_stats, load_dataset, split_dataset
from ..ops.log import get_logger


def _load(uri: str, cfg: Config) -> Dataset:
    dataset = aio.run(load_dataset(uri, cfg.storage, cfg.data.max_records))
    log = get_logger("data")
    for first, repeat in dataset.duplicates:
        log.warning("dataset_duplicate", source=dataset.source, record=repeat, same_as=first)
    return dataset


def count(args: argparse.Namespace, cfg: Config) -> int:
    dataset = _load(args.source or cfg.data.dataset, cfg)
    split = split_dataset(dataset.contexts, cfg.data.validation_fraction, cfg.data.seed)
    stats = dataset_stats(dataset, split)
    if args.json or not sys.stdout.isatty():
        sys.stdout.buffer.write(orjson.dumps(stats) + b"\n")
    else:
        print(_table(stats))
    return 0


def check(args: argparse.Namespace, cfg: Config) -> int:
    dataset = _load(args.dataset or cfg.data.dataset, cfg)
    get_logger("data").info(
        "dataset_ok", source=dataset.source, records=len(dataset.contexts),
        duplicates=len(dataset.duplicates),
    )
    return 0


def _table(stats: dict[str, Any]) -> str:
    lines = [
        f"source       {stats['source']}",
        f"entries      {stats['entries']}",
        f"train        {stats['train']}",
        f"validation   {stats['validation']}",
        f"duplicates   {stats['duplicates']}",
    ]
    for title, key in (("language", "languages"), ("industry", "industries"), ("skills", "skill_counts")):
        lines.append("")
        lines.append(f"{title:<24}{'count':>7}{'share':>8}")
        for name, n in stats[key].items():
            lines.append(f"{name:<24}{n:>7}{n / stats['entries']:>8.1%}")
    return "\n".join(lines)
