"""What we ask a completion server for, and what its replies must hold (pure: no I/O).

Invariant: a reply `parse_completions` accepts holds exactly `n` completions, each of 1 to
`max_tokens` token ids below the policy's embedding rows, with one finite log-prob <= 0 per
token; anything else is `MalformedReply` (the caller retries it), never a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import GenerationConfig
from ..generation.generator import STOP_TEXT

LOGPROB_SLACK = 1e-3  # a sampled token's log-prob above 0 by more than rounding is not a log-prob
REPLY_OVERHEAD_BYTES = 64 * 1024
REPLY_BYTES_PER_TOKEN = 512  # token string, log-prob, top log-prob, offset, text: ~100 in practice
_TOKEN_ID = re.compile(r"token_id:(\d{1,9})")


class MalformedReply(ValueError):
    """A reply that is not what was asked for (wrong shape, sizes or values, or too long)."""


@dataclass(frozen=True)
class Completion:
    """One sampled completion, as parsed from a reply."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # stop | length


def completion_request(prompt: Sequence[int], n: int, model: str, gen: GenerationConfig) -> dict[str, Any]:
    """The body of one `/v1/completions` request (vLLM's extensions included)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt),  # token ids: nothing is re-tokenised
        "n": n,
        "max_tokens": gen.max_new_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
        "logprobs": 1,  # the sampled token's log-prob (0 is ignored by some servers)
        "return_tokens_as_token_ids": True,
        "stop": [STOP_TEXT],
        "include_stop_str_in_output": True,
        "skip_special_tokens": False,
        "stream": False,
    }
    if gen.top_k > 0:
        body["top_k"] = gen.top_k
    return body


def reply_limit(n: int, max_tokens: int) -> int:
    """The most bytes a sane reply to an `n` x `max_tokens` request takes."""
    return REPLY_OVERHEAD_BYTES + n * max_tokens * REPLY_BYTES_PER_TOKEN


def parse_completions(reply: Any, n: int, max_tokens: int, embedding_rows: int) -> list[Completion]:
    """The `n` completions of a reply, in index order; `MalformedReply` on anything inconsistent."""
    if not isinstance(reply, dict):
        raise MalformedReply("the reply is not a JSON object")
    choices = reply.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else "no"
        raise MalformedReply(f"{got} choices for n={n}")
    out: list[Completion | None] = [None] * n
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise MalformedReply(f"choice {position} is not an object")
        index = choice.get("index", position)
        if not isinstance(index, int) or not 0 <= index < n or out[index] is not None:
            raise MalformedReply(f"choice {position} has a bad or repeated index {index!r}")
        out[index] = _parse_choice(choice, index, max_tokens, embedding_rows)
    return out  # type: ignore[return-value]


def _parse_choice(choice: dict, index: int, max_tokens: int, embedding_rows: int) -> Completion:
    finish = choice.get("finish_reason")
    if finish not in ("stop", "length"):
        raise MalformedReply(f"choice {index} finished with {finish!r}, not 'stop' or 'length'")
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        raise MalformedReply(f"choice {index} has no logprobs block (does the server honour 'logprobs'?)")
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise MalformedReply(f"choice {index}: tokens and token_logprobs are missing or differ in length")
    if not 1 <= len(tokens) <= max_tokens:
        raise MalformedReply(f"choice {index} has {len(tokens)} tokens, outside 1..max_tokens={max_tokens}")
    ids = tuple(_token_id(t, index, embedding_rows) for t in tokens)
    logprobs = tuple(_logprob(v, index) for v in values)
    return Completion(ids, logprobs, finish)


def _token_id(token: Any, index: int, embedding_rows: int) -> int:
    match = _TOKEN_ID.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise MalformedReply(
            f"choice {index}: token {str(token)[:40]!r} is not 'token_id:N' "
            "(the server must support return_tokens_as_token_ids, as vLLM does)"
        )
    value = int(match.group(1))
    if value >= embedding_rows:
        raise MalformedReply(f"choice {index}: token id {value} is past the model's {embedding_rows} embedding rows")
    return value


def _logprob(value: Any, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedReply(f"choice {index}: log-prob {value!r} is not a number")
    value = float(value)
    if not math.isfinite(value) or value > LOGPROB_SLACK:
        raise MalformedReply(f"choice {index}: log-prob {value} is not a finite log-probability")
    return min(value, 0.0)


def server_message(body: bytes) -> str:
    """The message in an error body: OpenAI's `{"error": {"message"}}`, vLLM's `{"message"}`, or text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:300]
    if isinstance(parsed, dict):
        inner = parsed.get("error", parsed)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
        if isinstance(parsed.get("message"), str):
            return parsed["message"][:300]
    return str(parsed)[:300]


def model_ids(body: bytes) -> set[str]:
    """The model names a `/v1/models` reply lists (none when it is not one)."""
    try:
        parsed = orjson.loads(body)
        return {str(m["id"]) for m in parsed["data"] if isinstance(m, dict) and "id" in m}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return set()
