"""Growing key/value buffers: a decode step writes its token in place instead of concatenating.

Shared by the lean decode's growing cache (decode.py) and the rows' own part of the shared-prefix
cache (shared_prefix.py): both hand the attention a view of the filled part.
"""

from __future__ import annotations

import torch

GROW_TOKENS = 128


class KVBuffers:
    """Key and value buffers [B, H, capacity, D] and how many positions are written."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        end = self.length + keys.shape[-2]
        if self.k is None or end > self.k.shape[-2]:
            self.k, self.v = self._grown(self.k, keys, end), self._grown(self.v, values, end)
        self.k[..., self.length:end, :] = keys
        self.v[..., self.length:end, :] = values
        self.length = end

    def _grown(self, old: torch.Tensor | None, new: torch.Tensor, end: int) -> torch.Tensor:
        b, h, _, d = new.shape
        buf = new.new_empty((b, h, end + GROW_TOKENS, d))
        if old is not None:
            buf[..., :self.length, :] = old[..., :self.length, :]
        return buf

    def select(self, index: torch.Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)

    def last(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = max(0, self.length - n)
        return self.k[..., start:self.length, :], self.v[..., start:self.length, :]
