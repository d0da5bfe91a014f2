"""The dataset: load (JSON array or JSON Lines, path / file:// / s3://), validate, split.

Records are untrusted input: every field is checked and size-bounded before it can reach a
prompt, and an error names the source, the record index and the reason. Records are counted
while they are parsed, so a file with more than `data.max_records` is refused at the first one
past the limit, before the rest is built. Dataset text is data: a field holding a chat-control
token is refused at load (Gemma's, by pattern) and, once the policy is loaded, any special or
added token of its own tokenizer (`check_against_policy`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .config import BUNDLED_DATASET, StorageConfig
from .errors import DataError
from .flow.records import LANGUAGES, Context

BUNDLED_PATH = Path(__file__).parent / "assets" / "job_offer_dataset.json"

MAX_DATASET_BYTES = 64 * 1024 * 1024
MAX_TITLE_CHARS = 200
MAX_SKILL_CHARS = 100
MAX_INDUSTRY_CHARS = 100
MIN_SKILLS, MAX_SKILLS = 1, 10
JSON_WHITESPACE = " \t\r\n"  # what JSON skips between values (not U+2028, not U+00A0)

# The chat-control tokens of the Gemma family (Gemma 1 to 3n): BOS/EOS/PAD/UNK/MASK, the turn
# markers, image and audio placeholders and the reserved <unusedN>. In a prompt they would forge
# chat turns, and an id past the embedding rows (<image_soft_token> in Gemma 3's text-only
# models) crashes generation. The dataset is loaded before the model, so this list is checked
# at load; `check_against_policy` then checks against the loaded tokenizer's own tokens.
GEMMA_CONTROL_TOKENS = re.compile(
    r"<(?:bos|eos|pad|unk|mask|start_of_turn|end_of_turn|start_of_image|end_of_image|image_soft_token"
    r"|start_of_audio|end_of_audio|audio_soft_token|unused\d+)>|\[multimodal\]"
)
PLAIN_TEXT = "dataset text must be plain text"


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
    text = _decode(raw, source)
    records = _array_records(text, source) if text.lstrip(JSON_WHITESPACE).startswith("[") else _line_records(text, source)
    contexts = []
    for index, record in records:
        if index >= max_records:  # counted while parsing: the rest is never built
            raise DataError(f"{source}: more than data.max_records={max_records} records")
        contexts.append(record_to_context(record, index, source))
    if not contexts:
        raise DataError(f"{source}: the dataset has no records")
    return Dataset(source, contexts, find_duplicates(contexts))


def _decode(raw: bytes, source: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 (byte {e.start})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The stdlib decoder can stop after one value (`raw_decode`); orjson reads whole documents only.
_ELEMENT = json.JSONDecoder(parse_constant=_reject_constant)


def _array_records(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """A JSON array's elements, one at a time, with their index."""

    def invalid(reason: str) -> DataError:
        return DataError(f"{source}: not valid JSON: {reason}")

    pos = _skip_whitespace(text, text.index("[") + 1)
    index = 0
    while not text.startswith("]", pos):
        if pos >= len(text):
            raise invalid(f"the array is not closed (after record {index - 1})")
        if index:
            if not text.startswith(",", pos):
                raise invalid(f"expected ',' or ']' after record {index - 1} (char {pos})")
            pos = _skip_whitespace(text, pos + 1)
        try:
            record, pos = _ELEMENT.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise invalid(f"record {index}: {e.msg} (char {e.pos})") from None
        except RecursionError:
            raise invalid(f"record {index} is nested too deeply") from None
        except ValueError as e:  # NaN, Infinity
            raise invalid(f"record {index}: {e}") from None
        yield index, record
        index += 1
        pos = _skip_whitespace(text, pos)
    if text[pos + 1:].strip(JSON_WHITESPACE):
        raise invalid(f"extra data after the array (char {pos + 1})")


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in JSON_WHITESPACE:
        pos += 1
    return pos


def _line_records(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """JSON Lines: one record per non-blank line; the record index counts records, not lines.

    Lines end at "\n" only: U+2028, U+0085 and the other breaks that `str.splitlines` also
    cuts at are valid inside a JSON string. A "\r" before the "\n" is JSON whitespace.
    """
    index = 0
    for line_no, line in enumerate(_lines(text), start=1):
        if not line.strip(JSON_WHITESPACE):
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise DataError(f"{source}: record {index} (line {line_no}) is not valid JSON") from None
        yield index, record
        index += 1


def _lines(text: str) -> Iterator[str]:
    """`text.split("\n")`, one line at a time (no list of every line of a large file)."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


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
    if not value.isascii() and _has_surrogate(value):  # "\ud800" in JSON: no tokenizer can encode it
        raise bad(f"{name} is not valid Unicode (a lone surrogate)")
    if control := GEMMA_CONTROL_TOKENS.search(value):
        raise bad(f"{name} holds {control.group()!r}, a chat-control token of Gemma's tokenizer ({PLAIN_TEXT})")
    return value


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------- against the model's tokenizer


def check_against_policy(dataset: Dataset, policy: Any) -> None:
    """`check_tokens` with the loaded policy's tokenizer and embedding rows: before any context
    reaches the model (`run`, `eval`, `generate`)."""
    rows = int(policy.model.get_input_embeddings().num_embeddings)
    check_tokens(dataset.contexts, dataset.source, policy.tokenizer, rows)


def check_tokens(contexts: Sequence[Context], source: str, tokenizer: Any, embedding_rows: int | None = None) -> None:
    """Every field of every context against the model's own tokenizer; one DataError for the first
    that holds one of its special or added tokens (forged turns or markup), or encodes to an id past
    the embedding rows (a crash in generation). It names the source, record, field and token."""
    reserved = reserved_tokens(tokenizer)
    specials = _any_of(content for content, kind in reserved.values() if kind == "special")
    fields = [(c, name, text) for c in contexts for name, text in context_fields(c)]
    encoded = tokenizer([text for _, _, text in fields], add_special_tokens=False)["input_ids"]
    for (context, name, text), ids in zip(fields, encoded):
        problem = _token_problem(text, ids, reserved, specials, embedding_rows)
        if problem:
            raise DataError(f"{source}: record {context.index}: {name} {problem}")


def reserved_tokens(tokenizer: Any) -> dict[int, tuple[str, str]]:
    """id -> (token, "special" | "added"): what dataset text must not hold.

    Added tokens made of whitespace only (Gemma has runs of spaces and newlines) are left out:
    they forge nothing, and a field's whitespace is normalised to single spaces anyway.
    """
    reserved: dict[int, tuple[str, str]] = {}
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        content = str(getattr(added, "content", added))
        if content.strip():
            reserved[int(token_id)] = (content, "special" if getattr(added, "special", False) else "added")
    for token in getattr(tokenizer, "all_special_tokens", []):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int):
            reserved[token_id] = (token, "special")
    return reserved


def context_fields(context: Context) -> list[tuple[str, str]]:
    """(field name as in the record, text) of every text field of `context`."""
    fields = [("job_title", context.job_title), *((f"skills[{i}]", s) for i, s in enumerate(context.skills))]
    return fields + ([("industry", context.industry)] if context.industry else [])


def _any_of(tokens: Any) -> re.Pattern[str] | None:
    ordered = sorted(set(tokens), key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in ordered)) if ordered else None


def _token_problem(text: str, ids: Sequence[int], reserved: dict[int, tuple[str, str]],
                   specials: re.Pattern[str] | None, embedding_rows: int | None) -> str:
    # The text itself first: a tokenizer set to split special tokens would not show them as ids.
    found = specials.search(text) if specials else None
    if found:
        return f"holds {found.group()!r}, a special token of the model's tokenizer ({PLAIN_TEXT})"
    for token_id in ids:
        if token_id in reserved:
            token, kind = reserved[token_id]
            article = "a special" if kind == "special" else "an added"
            return f"holds {token!r}, {article} token of the model's tokenizer ({PLAIN_TEXT})"
        if embedding_rows is not None and token_id >= embedding_rows:
            return f"encodes to token id {token_id}, past the model's {embedding_rows} embedding rows"
    return ""


def context_key(c: Context) -> tuple:
    from .flow.offer import normalise_skill

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
