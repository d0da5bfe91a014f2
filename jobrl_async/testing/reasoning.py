"""What the fake judge needs to answer like today's models: the reasoning families' 400s word for
word, hidden reasoning tokens per effort, replies emptied at the budget, and prompt caching.

    family    reasoning_effort values (default)     temperature   max_tokens
    classic   refused as unrecognised               any           yes
    gpt-5     minimal|low|medium|high (medium)       1 only        refused
    gpt-5.1   none|low|medium|high (none)            1 only        refused
    o1-mini   refused (no such parameter)            1 only        refused

Old Azure api-versions (before 2024-12-01-preview) refuse `max_completion_tokens` as an
unrecognised argument, whatever the model. Prompt caching as OpenAI and Azure do it: a prompt
sharing a prefix of at least 1,024 tokens with an earlier one gets that prefix, in 128-token
steps, reported as `prompt_tokens_details.cached_tokens` (tokens here are characters / 4).
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["classic", "gpt-5", "gpt-5.1", "o1-mini"]
EFFORTS: dict[str, tuple[str, ...]] = {
    "gpt-5": ("minimal", "low", "medium", "high"),
    "gpt-5.1": ("none", "low", "medium", "high"),
}
DEFAULT_EFFORT = {"gpt-5": "medium", "gpt-5.1": "none", "o1-mini": "medium"}
# Mean hidden reasoning tokens per effort (each reply varies +-50% around it, from its prompt).
REASONING_TOKENS = {"none": 0, "minimal": 16, "low": 320, "medium": 1200, "high": 3200}
FIRST_API_VERSION_WITH_REASONING = "2024-12-01"
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
CHARS_PER_TOKEN = 4


Refusal = tuple[int, str, "str | None", "str | None"]  # status, message, code, param


def _listed(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def refusal(family: Family, body: dict, api_version: str | None) -> Refusal | None:
    """The 400 a server of `family` answers to `body`, word for word, or None when it takes it."""
    if api_version is not None and api_version < FIRST_API_VERSION_WITH_REASONING \
            and "max_completion_tokens" in body:
        return 400, "Unrecognized request argument supplied: max_completion_tokens", None, None
    if family == "classic":
        if "reasoning_effort" in body:
            return 400, "Unrecognized request argument supplied: reasoning_effort", None, None
        return None
    if "max_tokens" in body:
        return (400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.", "unsupported_parameter", "max_tokens")
    effort = body.get("reasoning_effort")
    temperature = body.get("temperature", 1)
    takes_temperature = family == "gpt-5.1" and (effort or DEFAULT_EFFORT[family]) == "none"
    if temperature != 1 and not takes_temperature:
        return (400, f"Unsupported value: 'temperature' does not support {temperature} with this model. "
                "Only the default (1) value is supported.", "unsupported_value", "temperature")
    if effort is not None and family == "o1-mini":
        return (400, "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "unsupported_parameter", "reasoning_effort")
    if effort is not None and effort not in EFFORTS[family]:
        return (400, f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model. "
                f"Supported values are: {_listed(EFFORTS[family])}.", "unsupported_value", "reasoning_effort")
    return None


def reasoning_tokens(family: Family, body: dict, means: dict[str, float] = REASONING_TOKENS) -> int:
    """Hidden reasoning a reply of `family` spends on `body` (0 for a classic model)."""
    if family == "classic":
        return 0
    effort = body.get("reasoning_effort") or DEFAULT_EFFORT[family]
    mean = means.get(effort, REASONING_TOKENS[effort])
    spread = zlib.crc32(repr(body.get("messages")).encode()) % 1001 / 1000  # 0..1, steady per prompt
    return round(mean * (0.5 + spread))


def reply_budget(body: dict) -> int | None:
    """The reply's budget as sent: max_completion_tokens (reasoning + answer) or max_tokens."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@dataclass
class PromptCache:
    """Prefixes seen, by hash, at the sizes a cache hit can have (1,024 tokens, then every 128)."""

    max_entries: int = 200_000
    _seen: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cached_tokens(self, prompt: str) -> int:
        """Tokens of `prompt` served from the cache, and remember its prefixes for the next ones."""
        sizes = range(CACHE_MIN_TOKENS, len(prompt) // CHARS_PER_TOKEN + 1, CACHE_STEP_TOKENS)
        digests = [(tokens, hashlib.sha1(prompt[: tokens * CHARS_PER_TOKEN].encode()).digest()) for tokens in sizes]
        with self._lock:
            hit = max((tokens for tokens, d in digests if d in self._seen), default=0)
            if len(self._seen) + len(digests) > self.max_entries:
                self._seen.clear()
            self._seen.update(d for _, d in digests)
        return hit


def prompt_text(body: Any) -> str:
    """The prompt as the cache sees it: the messages' contents in order."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return ""
    return "\n".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
