"""The one batch/optimiser loop every training-like stage uses, and when a stage stops.

A stage supplies the order of its items per epoch and a ``step`` that returns the loss of one
batch; the loop does the optimiser bookkeeping, the NaN check, the per-batch and per-epoch
events, the loss history and progress, and the stopping rule (epoch ceiling, time budget, loss
plateau), so fit, refinement and the stages to come cannot drift apart in how they report or
stop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .context import RunContext
from .events import BatchEvent, EpochEvent, Event, StageEndEvent

UNBOUNDED = 10**9
"""An epoch ceiling that means "none": the stage ends on its time or pattern budget."""


@dataclass(frozen=True)
class StopRule:
    """When a stage ends: ``max_epochs`` is a ceiling; a ``time_limit`` (seconds, 0: none)
    ends it before an epoch that would overrun; a plateau ends it when the best loss of the
    last ``patience`` epochs (0: never) improved on the best before them by at most
    ``tolerance`` times the stage's whole improvement so far. Scale-free: a Poisson loss
    carries a large constant that a relative test on the loss itself would drown in."""

    max_epochs: int
    time_limit: float = 0.0
    patience: int = 0
    tolerance: float = 0.01

    def reason(self, losses: Sequence[float], elapsed: float, last_epoch: float) -> str | None:
        """Why to stop after ``losses`` (one per epoch so far), or None to go on."""
        if len(losses) >= self.max_epochs:
            return 'epochs'
        if self.time_limit > 0 and elapsed + last_epoch > self.time_limit:
            return 'time'
        if self.patience > 0 and len(losses) > self.patience:
            recent = min(losses[-self.patience :])
            before = min(losses[: -self.patience])
            gained = max(losses[0] - min(losses), 0.0)
            if before - recent <= self.tolerance * gained:
                return 'plateau'
        return None


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
    stop: StopRule,
    goal: int,
    order: Callable[[], np.ndarray],
    batch_size: int | Callable[[int], int],
    step: Callable[[np.ndarray], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    validate: Callable[[], float | None] | None = None,
    after_epoch: Callable[[int, bool], Iterator[Event]] | None = None,
    before_step: Callable[[], None] | None = None,
    units: int | None = None,
    units_done: Callable[[int], int] | None = None,
    nan_hint: str = 'lower the learning rate',
) -> Generator[Event, None, None]:
    """Passes over ``order()``'s items in batches of ``batch_size`` until ``stop`` says why.

    ``validate()`` returns a held-out loss for the epoch's :class:`EpochEvent` (or None);
    ``after_epoch(epoch, last)`` yields what follows that event (snapshots; ``last`` is true
    for the stage's final epoch). A stage that ends early still advances progress by its full
    ceiling, so progress goals stay what they were announced as. Ends with a
    :class:`StageEndEvent`.

    ``batch_size`` may be a function of the epoch (0-based).

    ``before_step()`` runs between the backward pass and the optimiser step (gradient
    clipping). Progress advances one unit per epoch over ``stop.max_epochs`` units, unless a
    stage whose length is a time budget announces its own ``units`` and maps the epochs done
    to the units done (``units_done``).
    """
    epochs = stop.max_epochs
    units = epochs if units is None else units
    first_progress = ctx.progress
    started = time.perf_counter()
    history: list[float] = []
    reason = 'epochs'
    for epoch in range(epochs):
        start = time.perf_counter()
        items = order()
        count = len(items)
        size = batch_size(epoch) if callable(batch_size) else batch_size
        num_batches = math.ceil(count / size)
        total = 0.0
        for b in range(num_batches):
            chosen = items[b * size : (b + 1) * size]
            loss = step(chosen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if before_step is not None:
                before_step()
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
        history.append(mean)
        done = len(history) if units_done is None else min(units_done(len(history)), units)
        ctx.progress = first_progress + done
        ctx.losses.append((ctx.progress, mean))
        held_out = validate() if validate is not None else None
        if held_out is not None:
            ctx.validation_losses.append((ctx.progress, held_out))
            history[-1] = held_out  # with held-out data, stop on what generalises
        now = time.perf_counter()
        stopping = stop.reason(history, now - started, now - start)
        if stopping is not None:
            reason = stopping
            ctx.progress = first_progress + units
        yield EpochEvent(stage, epoch, epochs, mean, now - start, ctx.progress, goal, held_out)
        if after_epoch is not None:
            yield from after_epoch(epoch, stopping is not None)
        if stopping is not None:
            break
    yield StageEndEvent(
        stage,
        reason,
        len(history),
        epochs,
        time.perf_counter() - started,
        ctx.losses[-1][1] if history else None,
    )


def snapshot_due(epoch: int, last: bool, every: int) -> bool:
    return last or (epoch + 1) % every == 0
