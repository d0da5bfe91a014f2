"""Attention over a shared prompt: each distinct prompt's keys and values once, each row's own tokens after it.

A GRPO step samples every context `attempts` times: 100 rows over 10 prompts. A KV cache with
a row per sequence holds every prompt ten times, and a one-token decode step reads all of it:
on a CPU that read, not the arithmetic, is most of the attention's time (a quarter of a lean
step at batch 100). Here the prompt part is kept once per distinct prompt and a group's rows
are asked against it together, as one matrix product (the cascade / shared-prefix attention of
serving engines), while each row's completion stays its own:

    scores = [q · prompt keys of its group (masked: left padding, the sliding window)  |  q · its own keys]
    softmax over both parts together, then  probs · [prompt values | its own values]

The same arithmetic as attention over the row's whole cache, in another order (float sums may
differ in the last bits). transformers calls our attention function (registered under
`ATTENTION`) with what the decode loop passes as the attention mask: a `PrefixStep`, which
knows the cache. Used for the decode steps of the lean path on the growing cache; the prefill
runs as usual.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .buffers import KVBuffers

ATTENTION = "jobrl_shared_prefix"


@dataclass
class PrefixLayer:
    """One layer: the distinct prompts' keys/values [P, KVH, W', D] (W' = what the prefill kept:
    a sliding layer keeps its last window - 1), where they start in the full prompt width, and the
    rows' own keys/values since."""

    keys: torch.Tensor
    values: torch.Tensor
    start: int  # absolute position of keys[:, :, 0]
    window: int | None  # sliding window, or None for full attention
    own: KVBuffers

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        self.own.append(key_states, value_states)
        return self.own.last(self.window or self.own.length)


class PrefixCache:
    """The cache the decode steps run on: what transformers' layers call `update` on."""

    def __init__(self, prefill_cache: Any, prompt_mask: torch.Tensor, row_prompt: torch.Tensor) -> None:
        width = prompt_mask.shape[1]
        self.width = width
        self.prompt_mask = prompt_mask.bool()  # [P, W]: False on left padding
        self.layers: list[PrefixLayer] = []
        for layer in prefill_cache.layers:
            keys, values = layer.keys, layer.values
            window = getattr(layer, "sliding_window", None)
            self.layers.append(PrefixLayer(keys, values, width - keys.shape[-2], window, KVBuffers()))
        self.select(row_prompt)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        return self.layers[layer_idx].update(key_states, value_states)

    def select(self, row_prompt: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """The rows' prompts (and, when rows leave, which own rows stay), and where each row goes
        when a group's rows are put side by side: `slot_of` [B] in a [P x G] layout (G: the
        largest group; smaller ones padded)."""
        if keep is not None:
            for layer in self.layers:
                layer.own.select(keep)
        self.row_prompt = row_prompt
        prompts = self.prompt_mask.shape[0]
        counts = torch.bincount(row_prompt, minlength=prompts)
        self.group = int(counts.max())
        order = torch.argsort(row_prompt, stable=True)
        rank = torch.empty_like(order)
        starts = torch.cumsum(counts, 0) - counts
        rank[order] = torch.arange(len(order), device=order.device) - starts[row_prompt[order]]
        self.slot_of = row_prompt * self.group + rank  # each row's place in the [P, G] layout
        # GRPO's usual layout (equal groups, each one's rows together): the gathers are views
        self.in_place = prompts * self.group == len(row_prompt) and bool(
            (self.slot_of == torch.arange(len(row_prompt), device=order.device)).all())

    def to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """[B, KVH, rep, N] per row -> [P, KVH, G * rep, N]: a group's rows side by side (padded)."""
        rows, kv_heads, rep, n = x.shape
        prompts = self.prompt_mask.shape[0]
        if self.in_place:
            grouped = x.view(prompts, self.group, kv_heads, rep, n)
        else:
            spread = x.new_zeros((prompts * self.group, kv_heads, rep, n))  # padding slots stay 0
            spread[self.slot_of] = x
            grouped = spread.view(prompts, self.group, kv_heads, rep, n)
        return grouped.transpose(1, 2).reshape(prompts, kv_heads, self.group * rep, n)

    def to_rows(self, x: torch.Tensor, rep: int) -> torch.Tensor:
        """[P, KVH, G * rep, N] -> [B, KVH, rep, N]: back to the rows, in their order."""
        prompts, kv_heads, _, n = x.shape
        flat = x.view(prompts, kv_heads, self.group, rep, n).transpose(1, 2).reshape(
            prompts * self.group, kv_heads, rep, n)
        return flat if self.in_place else flat[self.slot_of]

    @property
    def seen(self) -> int:
        """Positions so far: the prompt width and the rows' own tokens."""
        return self.width + self.layers[0].own.length


@dataclass(frozen=True)
class PrefixStep:
    """What the decode loop passes as one layer type's attention mask: the cache to attend over."""

    cache: PrefixCache

    def attend(self, module: Any, query: torch.Tensor, own_k: torch.Tensor, own_v: torch.Tensor,
               scaling: float) -> torch.Tensor:
        c = self.cache
        layer = c.layers[module.layer_idx]
        rows, heads, _, dim = query.shape
        kv_heads = own_k.shape[1]
        rep = heads // kv_heads
        # the prompt positions this layer still sees (a sliding window may have left some behind)
        first = c.seen - layer.window if layer.window else 0
        cut = max(0, first - layer.start)
        pk, pv = layer.keys[:, :, cut:], layer.values[:, :, cut:]
        seen = c.prompt_mask[:, layer.start + cut:]
        q = query.reshape(rows, kv_heads, rep, dim)
        # a group's rows side by side, against its prompt's keys in one product
        shared = torch.matmul(c.to_groups(q), pk.transpose(-1, -2)) * scaling  # [P, KVH, G * rep, W']
        if not bool(seen.all()):  # left padding still in view
            shared = shared.masked_fill(~seen[:, None, None, :], float("-inf"))
        shared = c.to_rows(shared, rep)
        own = torch.matmul(q, own_k.transpose(-1, -2)) * scaling
        # in float32 whatever the model's dtype, as transformers' eager attention does
        probs = torch.softmax(torch.cat([shared, own], -1), -1, dtype=torch.float32).to(query.dtype)
        p_shared, p_own = probs.split([shared.shape[-1], own.shape[-1]], -1)
        out = c.to_rows(torch.matmul(c.to_groups(p_shared), pv), rep) + torch.matmul(p_own, own_v)
        return out.reshape(rows, heads, 1, dim).transpose(1, 2)  # [B, 1, H, D], as sdpa returns


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: Any, scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    if not isinstance(attention_mask, PrefixStep):
        raise TypeError(f"{ATTENTION} attention runs only inside the lean decode loop")
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:  # StepMasks.of keeps these out
        raise TypeError(f"{ATTENTION} attention does not soft-cap logits or take attention sinks")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return attention_mask.attend(module, query, key, value, scale), None


@functools.cache
def _registered() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _attention)
    return ATTENTION


@contextmanager
def shared_prefix_attention(model: Any) -> Iterator[None]:
    """The model's attention is ours for the duration (decode steps only; the device lock is held)."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = _registered()
    try:
        yield
    finally:
        config._attn_implementation = before
