"""The context producer: epochs over the training split, seeded shuffle, batches of contexts.

Pure: the plan of a run is a function of (training split, seed, batch size, epochs), so a
resume at (epoch, position) continues with exactly the data an uninterrupted run would see.
"""

from __future__ import annotations

import random
from typing import Iterator

from .flow.records import Context, StepPlan


def steps_per_epoch(n_train: int, batch_contexts: int) -> int:
    """Full batches only: 481 contexts / 10 -> 48 steps, as in the seed (the last 1 waits)."""
    return n_train // batch_contexts


def epoch_order(train: list[Context], seed: int, epoch: int) -> list[Context]:
    order = sorted(train, key=lambda c: c.index)
    random.Random(f"{seed}:epoch:{epoch}").shuffle(order)
    return order


def plan_steps(
    train: list[Context], *, seed: int, batch_contexts: int, epochs: int, start_step: int = 1
) -> Iterator[StepPlan]:
    """Every step of the run from `start_step` on (steps already done are skipped, not redrawn)."""
    per_epoch = steps_per_epoch(len(train), batch_contexts)
    if per_epoch == 0:
        return
    for epoch in range(epochs):
        if (epoch + 1) * per_epoch < start_step:
            continue
        order = epoch_order(train, seed, epoch)
        for position in range(per_epoch):
            step = epoch * per_epoch + position + 1
            if step < start_step:
                continue
            batch = order[position * batch_contexts : (position + 1) * batch_contexts]
            yield StepPlan(step, epoch, position, tuple(batch))


def total_steps(n_train: int, batch_contexts: int, epochs: int, max_steps: int = 0) -> int:
    full = steps_per_epoch(n_train, batch_contexts) * epochs
    return min(full, max_steps) if max_steps else full
