"""Drawing a token per row from the model's scores, with the log-prob the learner needs.

Pure tensor maths, shared by both decode engines (decode.py, and generate()'s logits processor in
generator.py), so a seed draws the same tokens whichever engine samples:

    logp  = log_softmax(scores / T)                       the distribution the log-prob is read from
    probs = softmax(top_p(top_k(scores / T)))             what the token is drawn from
    token = first index whose cumulative mass exceeds u · total,   u ~ U[0, 1) per row

Log-probs are taken after temperature and before top-k / top-p: with the defaults (top_k = 0,
top_p = 1) that is exactly the distribution sampled from; with truncation it is the untruncated,
temperature-scaled one, which is what the learner recomputes (`policy.logprobs.sequence_logprobs`).

Inverse-CDF sampling draws one uniform per row, not one exponential per vocabulary entry as
`torch.multinomial` does (half of a decode step on a CPU: STACK-NOTES); its stream is seeded per
batch by a `torch.Generator`, and every row draws at every step (finished or not), so a row's
tokens do not depend on when the others finish.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import GenerationConfig


class TokenSampler:
    def __init__(self, gen: GenerationConfig, seed: int, device: str) -> None:
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.temperature = gen.temperature
        self.truncation = ([TopKLogitsWarper(gen.top_k)] if gen.top_k > 0 else []) + (
            [TopPLogitsWarper(gen.top_p)] if gen.top_p < 1.0 else []
        )
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # Cumulative sums in float64 (where the device has it), so that no token's share of a
        # large vocabulary's probability mass is lost to rounding.
        self.cdf_dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64

    def uniforms(self, rows: int, device: Any) -> torch.Tensor:
        """This step's [rows, 1] uniforms: one per row of the batch as it started."""
        return torch.rand((rows, 1), generator=self.generator, device=device, dtype=self.cdf_dtype)

    def draw(self, scores: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, 1] token ids, [B] their log-probs) for [B, V] scores and [B, 1] uniforms."""
        scaled = scores.float()
        if self.temperature != 1.0:
            scaled = scaled / self.temperature
        top = scaled.amax(dim=-1, keepdim=True)
        weights = torch.exp(scaled - top)  # one pass gives both the log-probs and the draw
        log_total = torch.log(weights.sum(dim=-1, keepdim=True))
        if self.truncation:
            allowed = scaled
            for warper in self.truncation:
                allowed = warper(None, allowed)
            weights = torch.exp(allowed - top)  # 0 where a warper set -inf
        tokens = inverse_cdf(weights, u, self.cdf_dtype)
        return tokens, (scaled.gather(1, tokens) - top - log_total).squeeze(1)


BLOCK = 64  # vocabulary entries summed together before the cumulative sum


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[B, 1] the first index whose cumulative weight exceeds u · total, per row.

    In two levels, because a cumulative sum over a whole vocabulary is a sequential pass (a tenth
    of a CPU decode step): the cumulative mass of blocks of BLOCK entries finds the block (sums
    vectorise), then a cumulative sum inside that block finds the token. A block's sum is taken
    in the weights' precision (a float32 sum of 64 entries is off by ~1e-7 of that block's mass:
    a float64 one costs as much as the whole draw), the cumulative sums in `dtype`, so that no
    token's share of a large vocabulary is lost to rounding."""
    rows, vocab = weights.shape
    if vocab % BLOCK:
        weights = torch.nn.functional.pad(weights, (0, -vocab % BLOCK))
    padded = weights.view(rows, -1, BLOCK)
    block_cdf = padded.sum(dim=-1).to(dtype).cumsum(dim=-1)  # [B, blocks]
    target = u.to(dtype) * block_cdf[:, -1:]
    # right=True: the first block (then token) whose cumulative mass exceeds the target, never a
    # zero-mass one
    block = torch.searchsorted(block_cdf, target, right=True).clamp_(max=block_cdf.shape[1] - 1)
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp_(min=0)), 0.0)
    inside = padded.gather(1, block.unsqueeze(-1).expand(rows, 1, BLOCK)).squeeze(1).to(dtype).cumsum(dim=-1)
    # the block's own sum and its cumulative sum may round differently: stay below its total
    rest = torch.minimum(target - before, torch.nextafter(inside[:, -1:], torch.zeros_like(inside[:, -1:])))
    token = torch.searchsorted(inside, rest.clamp_(min=0), right=True)
    return (block * BLOCK + token).clamp_(max=vocab - 1)
