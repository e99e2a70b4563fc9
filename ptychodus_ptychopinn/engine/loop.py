"""The one batch/optimiser loop every training-like stage uses.

A stage supplies the order of its items per epoch and a ``step`` that returns the loss of one
batch; the loop does the optimiser bookkeeping, the NaN check, the per-batch and per-epoch
events, the loss history and progress, so fit, refinement and the stages to come cannot drift
apart in how they report or stop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator

import numpy as np
import torch

from .context import RunContext
from .events import BatchEvent, EpochEvent, Event


def make_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``cosine``: from the full rate down to 5% of it over ``steps``; ``constant``: flat."""
    steps = max(steps, 1)
    if kind == 'cosine':
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps)),
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def run_epochs(
    ctx: RunContext,
    *,
    stage: str,
    epochs: int,
    goal: int,
    order: Callable[[], np.ndarray],
    batch_size: int,
    step: Callable[[np.ndarray], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    validate: Callable[[], float | None] | None = None,
    after_epoch: Callable[[int], Iterator[Event]] | None = None,
    nan_hint: str = 'lower the learning rate',
) -> Generator[Event, None, None]:
    """``epochs`` passes over ``order()``'s items in batches of ``batch_size``.

    ``validate()`` returns a held-out loss for the epoch's :class:`EpochEvent` (or None);
    ``after_epoch(epoch)`` yields what follows that event (snapshots).
    """
    for epoch in range(epochs):
        start = time.perf_counter()
        items = order()
        count = len(items)
        num_batches = math.ceil(count / batch_size)
        total = 0.0
        for b in range(num_batches):
            chosen = items[b * batch_size : (b + 1) * batch_size]
            loss = step(chosen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f'the {stage} loss became {value} at epoch {epoch + 1}; {nan_hint}.'
                )
            total += value * len(chosen)
            yield BatchEvent(stage, epoch, b, num_batches, value)
        mean = total / max(count, 1)
        ctx.progress += 1
        ctx.losses.append((ctx.progress, mean))
        held_out = validate() if validate is not None else None
        if held_out is not None:
            ctx.validation_losses.append((ctx.progress, held_out))
        yield EpochEvent(
            stage, epoch, epochs, mean, time.perf_counter() - start, ctx.progress, goal, held_out
        )
        if after_epoch is not None:
            yield from after_epoch(epoch)


def snapshot_due(epoch: int, epochs: int, every: int) -> bool:
    return (epoch + 1) % every == 0 or epoch + 1 == epochs
