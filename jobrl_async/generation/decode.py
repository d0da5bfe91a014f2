"""The lean decode path (`generation.engine = "static"`): prefill once, then one model step per
token over a KV cache, with sampling, log-probs and stop checks on tensors.

    prompts ──dedupe──▶ prefill (each distinct prompt once) ──expand──▶ B rows
            ──▶ loop: draw a token per row (sampling.py) ──▶ stop? (EOS ids, or the row's last
                tokens spell </job_offer>: a table of token strings, never a decode per step)
                ──▶ finished rows leave the batch (the cache keeps only the rows still going)
                    and are handed over at once (`on_finished`: offers stream to the judge)
                ──▶ one model step on the rows still going

What generate() spends per step on logits processors, stopping criteria that decode text and
cache bookkeeping is not spent here (`bench generate` measures both on the same work). The GRPO
shape helps: a training step's 10 attempts per context share one prompt, prefilled once and, on
the dynamic cache, kept and attended once for the whole group (shared_prefix.py).

Two caches: `dynamic` (layers that grow in place, see `growing_cache`, or a `PrefixCache` when
prompts repeat: rows can leave the batch) and `static`
(StaticCache: fixed addresses, what CUDA graphs need; rows stay, finished ones are ignored). On
CUDA the decode step is compiled (`torch.compile`, mode "reduce-overhead": CUDA graphs) with the
static cache; on a CPU compilation is off and the dynamic cache is the cheaper one. Both caches
run the same loop, and the tests run both on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..config import GenerationConfig
from ..policy.logprobs import left_pad, position_ids
from .buffers import KVBuffers
from .sampling import TokenSampler
from .shared_prefix import PrefixCache, PrefixStep, shared_prefix_attention

STOP_TEXT = "</job_offer>"
COMPACT_SHARE = 0.25  # rows leave the batch once this share of it has finished (dynamic cache)


@dataclass(frozen=True)
class Sample:
    """One sampled completion, before it becomes a Trajectory."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]  # up to and including the stop token, if any
    logprobs: tuple[float, ...]
    truncated: bool


OnFinished = Callable[[int, Sample], None]  # (row, its sample), called as each row ends


def decode(policy: Any, prompts: Sequence[Sequence[int]], gen: GenerationConfig, seed: int, *,
           max_new_tokens: int | None = None, stop: bool = True, cache: str = "dynamic",
           compile_step: bool = False, on_finished: OnFinished | None = None) -> list[Sample]:
    """Sample one completion per prompt; `stop=False` runs every row to `max_new_tokens`
    (benchmarks). Blocking: call it from the device's worker thread."""
    model = policy.model
    was_training = model.training
    model.eval()  # no LoRA dropout while sampling
    try:
        with torch.no_grad(), merged_lora(model):
            run = _Run(policy, prompts, gen, seed, max_new_tokens or gen.max_new_tokens, stop, on_finished)
            return run.loop(cache, compile_step)
    finally:
        model.train(was_training)


@contextmanager
def merged_lora(model: Any) -> Iterator[None]:
    """While sampling, each LoRA layer's base weight is a private copy with the adapter folded in
    (W + s·B·A, rounded once) and the adapter is bypassed: one matmul per linear instead of three.
    The original weights are put back afterwards, untouched (peft's own merge/unmerge would add
    and subtract in place: a bf16 base would drift a little with every step). Callers hold the
    device lock, so no learner step sees the swap."""
    from peft.tuners.lora import LoraLayer

    swapped: list[tuple[Any, torch.Tensor]] = []
    try:
        for module in model.modules():
            if isinstance(module, LoraLayer) and not module.merged and module.active_adapters:
                base = module.get_base_layer()
                delta = sum(module.get_delta_weight(name).float() for name in module.active_adapters)
                swapped.append((base, base.weight.data))
                base.weight.data = (base.weight.data.float() + delta).to(base.weight.dtype)
        with model.disable_adapter() if swapped else contextlib.nullcontext():
            yield
    finally:
        for base, original in swapped:
            base.weight.data = original


class _Run:
    """One decode: the rows' state as tensors, the cache, and the finished rows' samples."""

    def __init__(self, policy: Any, prompts: Sequence[Sequence[int]], gen: GenerationConfig, seed: int,
                 new_tokens: int, stop: bool, on_finished: OnFinished | None) -> None:
        self.policy, self.model, self.device = policy, policy.model, policy.device
        self.prompts = [tuple(int(t) for t in p) for p in prompts]
        self.new_tokens, self.stop, self.on_finished = new_tokens, stop, on_finished
        self.sampler = TokenSampler(gen, seed, self.device)
        self.stopper = StopCheck(policy.tokenizer, policy.stop_ids, vocab_rows(policy.model), self.device)
        rows = len(self.prompts)
        self.tokens = torch.full((rows, new_tokens), policy.pad_id, dtype=torch.long)
        self.logprobs = torch.zeros((rows, new_tokens))
        self.samples: list[Sample | None] = [None] * rows
        self.masks = StepMasks.of(self.model)

    def loop(self, cache_kind: str, compile_step: bool) -> list[Sample]:
        scores, cache, mask, positions, filled = self._prefill(cache_kind)  # filled: the prompts' width
        step = _compiled(self.model) if compile_step else self.model
        shared = isinstance(cache, PrefixCache)
        with shared_prefix_attention(self.model) if shared else contextlib.nullcontext():
            return self._steps(step, scores, cache, mask, positions, filled, cache_kind, compile_step)

    def _steps(self, step: Any, scores: torch.Tensor, cache: Any, mask: torch.Tensor, positions: torch.Tensor,
               filled: int, cache_kind: str, compile_step: bool) -> list[Sample]:
        rows = torch.arange(len(self.prompts), device=self.device)  # original row of each batch row
        done = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        for t in range(self.new_tokens):
            u = self.sampler.uniforms(len(self.prompts), self.device)[rows]
            tokens, logprobs = self.sampler.draw(scores, u)
            self._record(rows, done, t, tokens, logprobs)
            finished = ~done & self.stopper.hits(tokens.squeeze(1), self.tokens, rows, t) if self.stop else None
            if finished is not None and bool(finished.any()):
                self._finish(rows[finished], t + 1, truncated=False)
                done |= finished
            if t + 1 == self.new_tokens or bool(done.all()):
                break
            if not compile_step and int(done.sum()) >= max(1, COMPACT_SHARE * len(rows)):
                keep = (~done).nonzero().squeeze(1)
                if isinstance(cache, PrefixCache):
                    cache.select(cache.row_prompt[keep], keep)
                else:
                    select_rows(cache, keep)
                rows, done, tokens, mask, positions = rows[keep], done[keep], tokens[keep], mask[keep], positions[keep]
            mask[:, filled] = 1  # a mask with room for every new token, filled in place
            filled += 1
            positions = positions + 1
            # the static cache attends over all its slots (the same shapes every step, for CUDA
            # graphs); the growing one over the positions written so far, with masks built here
            attend = mask if cache_kind == "static" else self.masks.step(mask[:, :filled], cache)
            out = step(input_ids=tokens, attention_mask=attend, position_ids=positions, cache=cache, use_cache=True)
            scores = out.logits[:, -1, :]
        unfinished = [r for r, s in enumerate(self.samples) if s is None]
        if unfinished:
            self._finish(torch.tensor(unfinished), self.new_tokens, truncated=True)
        return [s for s in self.samples if s is not None]

    def _prefill(self, cache_kind: str) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor, int]:
        """Each distinct prompt once, then its cache rows repeated for every row that asked for it."""
        from transformers import DynamicCache, StaticCache

        distinct = list(dict.fromkeys(self.prompts))
        index = torch.tensor([distinct.index(p) for p in self.prompts], device=self.device)
        ids, mask = left_pad(distinct, self.policy.pad_id, self.device)
        positions = position_ids(mask)
        cache = (StaticCache(config=self.model.config, max_cache_len=ids.shape[1] + self.new_tokens)
                 if cache_kind == "static" else growing_cache(DynamicCache(config=self.model.config)))
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1)
        if cache_kind != "static" and self.masks.window is not None and len(distinct) < len(self.prompts):
            cache = PrefixCache(cache, mask, index)  # each prompt's keys once, for its whole group
        elif len(distinct) < len(self.prompts):
            select_rows(cache, index)
        mask = mask[index]  # with room for every new token, masked until it is written
        mask = torch.cat([mask, torch.zeros((len(index), self.new_tokens), dtype=mask.dtype, device=mask.device)], 1)
        return out.logits[index, -1, :], cache, mask, positions[index, -1:], ids.shape[1]

    def _record(self, rows: torch.Tensor, done: torch.Tensor, t: int, tokens: torch.Tensor,
                logprobs: torch.Tensor) -> None:
        going = rows[~done].cpu()
        self.tokens[going, t] = tokens[~done].squeeze(1).cpu()
        self.logprobs[going, t] = logprobs[~done].float().cpu()

    def _finish(self, rows: torch.Tensor, length: int, *, truncated: bool) -> None:
        for row in rows.tolist():
            sample = Sample(
                prompt_ids=self.prompts[row],
                completion_ids=tuple(self.tokens[row, :length].tolist()),
                logprobs=tuple(self.logprobs[row, :length].tolist()),
                truncated=truncated,
            )
            self.samples[row] = sample
            if self.on_finished is not None:
                self.on_finished(row, sample)


def growing_cache(cache: Any) -> Any:
    """`cache` (a DynamicCache) with its layers swapped for ones that write each new token in place.

    transformers' dynamic layers concatenate the whole cache with every token: O(T²) copying,
    a quarter of a CPU decode step at a few hundred tokens. These keep a buffer that grows by
    `buffers.GROW_TOKENS` and hand the attention a view of its filled part, with the same lengths and
    mask sizes as the layers they replace."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    full, sliding = _layer_classes()
    cache.layers = [sliding(layer.sliding_window) if isinstance(layer, DynamicSlidingWindowLayer) else full()
                    for layer in cache.layers]
    return cache


@functools.cache
def _layer_classes() -> tuple[type, type]:
    """The growing layers (subclasses of transformers' own, defined on first use: importing
    transformers is slow, and most commands never decode)."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    class GrowingLayer(DynamicLayer):
        """A full-attention layer: all positions so far."""

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.buffers = KVBuffers()
            self.buffers.append(key_states, value_states)
            self.keys, self.values = self.buffers.last(self.buffers.length)
            return self.keys, self.values

        def select(self, index: torch.Tensor) -> None:
            self.buffers.select(index)
            self.keys, self.values = self.buffers.last(self.buffers.length)

    class GrowingSlidingLayer(DynamicSlidingWindowLayer):
        """A sliding-window layer: keeps every position (bounded by the decode's length) and, as
        DynamicSlidingWindowLayer does, attends over the last `sliding_window - 1` cached ones plus
        the new ones."""

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.buffers = KVBuffers()
            self.cumulative_length += key_states.shape[-2]
            self.buffers.append(key_states, value_states)
            self.keys, self.values = self.buffers.last(self.sliding_window - 1)
            return self.buffers.last(self.sliding_window - 1 + key_states.shape[-2])

        def select(self, index: torch.Tensor) -> None:
            self.buffers.select(index)
            self.keys, self.values = self.buffers.last(self.sliding_window - 1)

    return GrowingLayer, GrowingSlidingLayer


@dataclass(frozen=True)
class StepMasks:
    """The attention masks of a one-token step over the growing cache, built from the 2-D mask.

    transformers builds them per step from the cache and the 2-D mask through its general
    masking functions (vmap'd mask functions, padding and window checks): a tenth of a CPU
    decode step on a small model. For one new token they are simple: a full-attention layer
    attends to every real position so far, a sliding one to the real ones among the last
    `window` (the positions its layer hands over). In the format the attention takes: bool
    (True: attend) for sdpa, additive floats for eager; another attention gets the 2-D mask
    and transformers' own path."""

    window: int | None  # None: build no masks, pass the 2-D mask on
    layer_types: frozenset[str]
    additive: torch.dtype | None  # eager: the dtype of an additive mask

    @classmethod
    def of(cls, model: Any) -> "StepMasks":
        config = model.config
        implementation = getattr(config, "_attn_implementation", None)
        types = frozenset(getattr(config, "layer_types", None) or ())
        # what these masks and shared_prefix.py compute: plain full / sliding attention, nothing more
        # (no logit soft-capping as in Gemma 2, no attention sinks, no sub-models sharing the config)
        plain = (types and types <= {"full_attention", "sliding_attention"}
                 and getattr(config, "attn_logit_softcapping", None) is None and not getattr(config, "sub_configs", None)
                 and not any(name.endswith("sinks") for name, _ in model.named_parameters()))
        if implementation not in ("sdpa", "eager") or not plain:
            return cls(None, types, None)
        window = int(config.sliding_window) if "sliding_attention" in types else 0
        return cls(window, types, model.dtype if implementation == "eager" else None)

    def step(self, mask: torch.Tensor, cache: Any = None) -> Any:
        """`mask` [B, positions so far] (1: a real token) -> what the model's forward takes."""
        if isinstance(cache, PrefixCache):  # the cache knows the prompts' padding and the rows
            return {name: PrefixStep(cache) for name in self.layer_types}
        if self.window is None:
            return mask
        keep = mask.bool()[:, None, None, :]
        masks = {"full_attention": keep, "sliding_attention": keep[..., -self.window:]}
        return {name: self._format(masks[name]) for name in self.layer_types}

    def _format(self, keep: torch.Tensor) -> torch.Tensor:
        if self.additive is None:
            return keep
        return torch.zeros(keep.shape, dtype=self.additive, device=keep.device).masked_fill(
            ~keep, torch.finfo(self.additive).min)


def select_rows(cache: Any, index: torch.Tensor) -> None:
    """Keep (or repeat) the cache rows `index` names, in that order, in every layer."""
    for layer in cache.layers:
        if hasattr(layer, "buffers"):
            layer.select(index)
        elif isinstance(getattr(layer, "keys", None), torch.Tensor):
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
            if hasattr(layer, "batch_size"):
                layer.batch_size = len(index)


class StopCheck:
    """Which rows just ended: an EOS-like id, or their last tokens spell STOP_TEXT.

    The text check looks only at rows whose new token contains the stop text's last character,
    and joins the strings of their last few tokens from a table built once per tokenizer: no
    tokenizer decode inside the loop, and never a look into the prompt (which quotes the XML
    template).
    """

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int], vocab_size: int, device: str) -> None:
        self.stop_ids = torch.tensor(sorted(stop_ids), device=device)
        pieces = token_pieces(tokenizer)
        self.pieces = pieces + [""] * (vocab_size - len(pieces))  # rows past the tokenizer spell nothing
        self.candidate = torch.tensor([STOP_TEXT[-1] in p for p in self.pieces], device=device)
        self.tail = len(STOP_TEXT)  # every token spells at least one character of it

    def hits(self, new: torch.Tensor, history: torch.Tensor, rows: torch.Tensor, t: int) -> torch.Tensor:
        """[B] bool for the batch's new tokens; `history[rows, :t + 1]` holds each row's completion."""
        hit = torch.isin(new, self.stop_ids)
        maybe = self.candidate[new] & ~hit
        for i in maybe.nonzero().flatten().tolist():
            ids = history[int(rows[i]), max(0, t + 1 - self.tail): t + 1].tolist()
            if STOP_TEXT in "".join(self.pieces[j] for j in ids):
                hit[i] = True
        return hit


def vocab_rows(model: Any) -> int:
    """Ids a model can sample: its output rows (the tokenizer may have fewer: rows rounded up)."""
    return int(model.get_output_embeddings().weight.shape[0])


_PIECES: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def token_pieces(tokenizer: Any) -> list[str]:
    """Each token id's text on its own (cached per tokenizer: Gemma's has 262k entries)."""
    if tokenizer not in _PIECES:
        size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
        _PIECES[tokenizer] = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False,
                                                   clean_up_tokenization_spaces=False)
    return _PIECES[tokenizer]


COMPILE_OPTIONS: dict[str, Any] = {"mode": "reduce-overhead"}  # CUDA graphs; tests use backend "eager"


def _compiled(model: Any) -> Any:
    """The decode step compiled for CUDA graphs (once per model; shapes stay fixed with the static cache)."""
    compiled = getattr(model, "_jobrl_compiled_step", None)
    if compiled is None:
        compiled = torch.compile(model.forward, **COMPILE_OPTIONS)
        model._jobrl_compiled_step = compiled
    return compiled
