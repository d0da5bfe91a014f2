"""The policy's log-probs of given completions (teacher-forced), and the batch layout they need.

Rows are left-padded (every row ends at the right edge) with positions counted over real tokens
only, exactly as the generator lays out its prompts, so the learner's recomputed log-probs match
the sampling-time ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: every row ends at the right edge."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[row, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (as `generate` does), so padding shifts nothing."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence_logprobs(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    temperature: float,
    pad_id: int = 0,
) -> list[Any]:
    """Log-probs of each completion token under the model, temperature-scaled: one forward pass.

    Batched with left padding, the attention mask and position ids that `generate` uses, so
    the result matches the sampling-time log-probs (fp32: within ~1e-5). Grad follows the
    caller: wrap in `torch.no_grad()` for old-policy log-probs, leave it on for the loss. The
    model's train/eval mode is the caller's too (LoRA dropout applies in train mode).
    """
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    device = next(model.parameters()).device
    ids, mask = left_pad(rows, pad_id, str(device))
    longest = max((len(c) for c in completion_ids), default=0)
    if longest == 0:
        return [torch.zeros(0, device=device) for _ in rows]
    # Every row ends at the right edge, so only the last `longest + 1` positions predict
    # completion tokens: keep the logits of those alone.
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=longest + 1
    ).logits
    out = []
    for row, completion in enumerate(completion_ids):
        n = len(completion)
        if n == 0:
            out.append(torch.zeros(0, device=device))
            continue
        scores = logits[row, -n - 1 : -1].float() / temperature
        targets = ids[row, -n:].unsqueeze(1)
        out.append(torch.log_softmax(scores, dim=-1).gather(1, targets).squeeze(1))
    return out
