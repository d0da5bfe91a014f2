"""The dataset: load (JSON array or JSON Lines, path / file:// / s3://), validate, split.

Records are untrusted input: every field is checked and size-bounded before it can reach a
prompt, and an error names the source, the record index and the reason.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .config import BUNDLED_DATASET, StorageConfig
from .errors import DataError
from .records import LANGUAGES, Context

BUNDLED_PATH = Path(__file__).parent / "assets" / "job_offer_dataset.json"

MAX_DATASET_BYTES = 64 * 1024 * 1024
MAX_TITLE_CHARS = 200
MAX_SKILL_CHARS = 100
MAX_INDUSTRY_CHARS = 100
MIN_SKILLS, MAX_SKILLS = 1, 10


@dataclass(frozen=True)
class Dataset:
    source: str
    contexts: list[Context]
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (first index, repeat index)


@dataclass(frozen=True)
class DataSplit:
    train: list[Context]
    validation: list[Context]


# ---------------------------------------------------------------- parsing (pure)


def parse_dataset(raw: bytes, source: str, max_records: int = 100_000) -> Dataset:
    """Parse and validate a whole dataset file; the first bad record raises a DataError."""
    records = _decode(raw, source)
    if not records:
        raise DataError(f"{source}: the dataset has no records")
    if len(records) > max_records:
        raise DataError(f"{source}: {len(records)} records, more than data.max_records={max_records}")
    contexts = [record_to_context(rec, i, source) for i, rec in enumerate(records)]
    return Dataset(source, contexts, find_duplicates(contexts))


def _decode(raw: bytes, source: str) -> list[Any]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 (byte {e.start})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError as e:
            raise DataError(f"{source}: not valid JSON: {e}") from None
        if not isinstance(doc, list):
            raise DataError(f"{source}: expected a JSON array of records")
        return doc
    return _decode_lines(text, source)


def _decode_lines(text: str, source: str) -> list[Any]:
    """JSON Lines: one record per non-empty line; the record index counts records, not lines."""
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise DataError(
                f"{source}: record {len(records)} (line {line_no}) is not valid JSON"
            ) from None
    return records


def record_to_context(record: Any, index: int, source: str) -> Context:
    """A dataset record (`{"context": {...}}`) or a bare context, validated."""

    def bad(reason: str) -> DataError:
        return DataError(f"{source}: record {index}: {reason}")

    if not isinstance(record, dict):
        raise bad(f"expected an object, got {type(record).__name__}")
    ctx = record.get("context", record)
    if not isinstance(ctx, dict):
        raise bad("'context' must be an object")
    title = _text(ctx.get("job_title"), "job_title", MAX_TITLE_CHARS, bad)
    language = ctx.get("language")
    if not isinstance(language, str) or language.strip().lower() not in LANGUAGES:
        raise bad(f"language must be one of {', '.join(LANGUAGES)}, got {language!r:.40}")
    skills = ctx.get("skills")
    if not isinstance(skills, list) or not MIN_SKILLS <= len(skills) <= MAX_SKILLS:
        raise bad(f"skills must be a list of {MIN_SKILLS}-{MAX_SKILLS} strings")
    clean = tuple(_text(s, f"skills[{i}]", MAX_SKILL_CHARS, bad) for i, s in enumerate(skills))
    industry = ctx.get("industry")
    if industry is not None:
        industry = _text(industry, "industry", MAX_INDUSTRY_CHARS, bad)
    return Context(title, language.strip().lower(), clean, industry, index)  # type: ignore[arg-type]


def _text(value: Any, name: str, limit: int, bad: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad(f"{name} must be a non-empty string")
    value = " ".join(value.split())
    if len(value) > limit:
        raise bad(f"{name} is {len(value)} characters, the limit is {limit}")
    return value


def context_key(c: Context) -> tuple:
    from .offer import normalise_skill

    return (c.language, normalise_skill(c.job_title), tuple(sorted(normalise_skill(s) for s in c.skills)))


def find_duplicates(contexts: list[Context]) -> list[tuple[int, int]]:
    seen: dict[tuple, int] = {}
    dups = []
    for c in contexts:
        key = context_key(c)
        if key in seen:
            dups.append((seen[key], c.index))
        else:
            seen[key] = c.index
    return dups


# ---------------------------------------------------------------- loading (I/O)


def load_bundled() -> list[Context]:
    return load_dataset_file(BUNDLED_PATH, "bundled dataset").contexts


def read_bounded(path: Path, limit: int, source: str | None = None) -> bytes:
    """A local file's bytes, refusing more than `limit`; errors name the file."""
    source = source or str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise DataError(f"{source}: no such file") from None
    except OSError as e:
        raise DataError(f"{source}: cannot read ({e.strerror})") from None
    if len(raw) > limit:
        raise DataError(f"{source}: larger than the {limit}-byte limit")
    return raw


def read_text(path: Path, limit: int, source: str | None = None) -> str:
    raw = read_bounded(path, limit, source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source or path}: not UTF-8 text (byte {e.start})") from None


MAX_CONTEXT_FILE_BYTES = 64 * 1024


def read_context_file(path: Path) -> Context:
    """One context from a JSON file, bare (`{"job_title": ...}`) or as a record (`{"context": ...}`)."""
    source = f"context file {path}"
    try:
        record = orjson.loads(read_bounded(path, MAX_CONTEXT_FILE_BYTES, source))
    except orjson.JSONDecodeError as e:
        raise DataError(f"{source}: not valid JSON ({e})") from None
    return record_to_context(record, 0, source)


def load_dataset_file(path: Path, source: str | None = None, max_records: int = 100_000) -> Dataset:
    source = source or str(path)
    return parse_dataset(read_bounded(path, MAX_DATASET_BYTES, source), source, max_records)


async def load_dataset(
    uri: str = BUNDLED_DATASET, storage: StorageConfig | None = None, max_records: int = 100_000
) -> Dataset:
    """Load from "bundled", a plain path, file:// or s3:// (via the storage layer)."""
    if uri == BUNDLED_DATASET:
        return load_dataset_file(BUNDLED_PATH, "bundled dataset", max_records)
    if "://" not in uri:
        return load_dataset_file(Path(uri), uri, max_records)
    from .storage import read_uri

    raw = await read_uri(uri, storage, max_bytes=MAX_DATASET_BYTES)
    return parse_dataset(raw, uri, max_records)


# ---------------------------------------------------------------- split and statistics (pure)


def split_dataset(contexts: list[Context], fraction: float, seed: int) -> DataSplit:
    """Seeded split, stratified by language; identical across runs and machines.

    The validation size is round(n * fraction) (534 -> 53), shared out between languages by
    largest remainder, so stratification never changes the total.
    """
    by_lang: dict[str, list[Context]] = {}
    for c in sorted(contexts, key=lambda c: c.index):
        by_lang.setdefault(c.language, []).append(c)
    quotas = _largest_remainder({k: len(v) * fraction for k, v in by_lang.items()}, round(len(contexts) * fraction))
    validation: list[Context] = []
    for lang in sorted(by_lang):
        pool = list(by_lang[lang])
        random.Random(f"{seed}:{lang}").shuffle(pool)  # str seeds hash the same everywhere
        validation.extend(pool[: quotas[lang]])
    chosen = {c.index for c in validation}
    train = [c for c in sorted(contexts, key=lambda c: c.index) if c.index not in chosen]
    return DataSplit(train, sorted(validation, key=lambda c: c.index))


def _largest_remainder(shares: dict[str, float], total: int) -> dict[str, int]:
    quotas = {k: int(v) for k, v in shares.items()}
    left = total - sum(quotas.values())
    for k in sorted(shares, key=lambda k: (-(shares[k] - quotas[k]), k))[:max(left, 0)]:
        quotas[k] += 1
    return quotas


def dataset_stats(dataset: Dataset, split: DataSplit) -> dict[str, Any]:
    cs = dataset.contexts
    return {
        "source": dataset.source,
        "entries": len(cs),
        "train": len(split.train),
        "validation": len(split.validation),
        "languages": dict(sorted(Counter(c.language for c in cs).items())),
        "industries": dict(Counter(c.industry or "(none)" for c in cs).most_common()),
        "skill_counts": {str(k): v for k, v in sorted(Counter(len(c.skills) for c in cs).items())},
        "duplicates": len(dataset.duplicates),
    }
