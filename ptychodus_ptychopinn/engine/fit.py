"""Stage ``fit``: self-supervised training of the network on a scan (optionally held out)."""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import torch

from ..stitch import Stitcher
from .context import RunContext
from .events import Event, SnapshotEvent
from .loop import StopRule, make_scheduler, run_epochs, snapshot_due


def fit_network(
    ctx: RunContext,
    epochs: int,
    goal: int,
    subset: np.ndarray | None = None,
    validation: np.ndarray | None = None,
) -> Generator[Event, None, None]:
    """Fit the generator (and, as configured, the intensity scale) to the counts; the probe
    is refined, if asked, by the refinement stage, whose update suits it.

    Each step sees a batch of scan-point groups; the anchor patch of every group is stitched
    as it goes, so a snapshot costs no extra pass. With ``validation`` groups, each epoch
    reports their loss instead of snapshots (training data has no object to show).
    """
    pinn = ctx.pinn
    train = ctx.config.train
    batch = ctx.payload.config.execution.batch_size
    subset = np.arange(ctx.payload.num_patterns) if subset is None else subset
    num_batches = math.ceil(len(subset) / batch)
    pinn.log_scale.requires_grad_(train.learn_scale)
    groups: list[dict[str, Any]] = [
        {'params': list(pinn.generator.parameters()), 'lr': train.learning_rate}
    ]
    if train.learn_scale:
        groups.append({'params': [pinn.log_scale], 'lr': train.learning_rate})
    optimizer = torch.optim.Adam(groups)
    scheduler = make_scheduler(optimizer, train.schedule, epochs * num_batches)
    stitchers: list[Stitcher] = []  # this epoch's, made when the epoch starts

    def order() -> np.ndarray:
        stitchers[:] = [ctx.stitcher()]
        return subset[ctx.rng.permutation(len(subset))]

    def step(chosen: np.ndarray) -> torch.Tensor:
        members = ctx.payload.groups.members[chosen]
        measured = ctx.measured(members)
        predicted, patches = ctx.pinn(ctx.network_input(measured), ctx.offsets(chosen))
        anchors = ctx.pinn.patch_positions(ctx.payload.positions[members[:, 0]])
        stitchers[0].add(patches[:, 0].detach(), torch.as_tensor(anchors, device=ctx.device))
        return ctx.loss_fn(predicted, measured, ctx.good_mask)

    def snapshot(epoch: int, last: bool) -> Iterator[Event]:
        if snapshot_due(epoch, last, train.snapshot_every):
            obj = stitchers[0].result(ctx.payload.object_init)
            yield SnapshotEvent('fit', ctx.progress, obj, ctx.probe_numpy(), ctx.history())

    try:
        yield from run_epochs(
            ctx,
            stage='fit',
            stop=StopRule(
                epochs, train.fit_time_limit, train.plateau_patience, train.plateau_tolerance
            ),
            goal=goal,
            order=order,
            batch_size=batch,
            step=step,
            optimizer=optimizer,
            scheduler=scheduler,
            validate=None if validation is None else lambda: validation_loss(ctx, validation),
            after_epoch=snapshot if validation is None else None,
        )
    finally:
        # A failed run's traceback keeps these closures' frames, and frames keep their
        # functions: the closures reach the network only through ctx (closed by the caller),
        # and the canvases go here.
        stitchers.clear()
        pinn.log_scale.requires_grad_(False)


def validation_loss(ctx: RunContext, groups: np.ndarray) -> float:
    """Mean loss of held-out groups, without gradients (the network in eval mode)."""
    pinn = ctx.pinn
    batch = ctx.payload.config.execution.inference_batch_size
    total = 0.0
    pinn.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(groups), batch):
                chosen = groups[b : b + batch]
                members = ctx.payload.groups.members[chosen]
                measured = ctx.measured(members)
                predicted, _ = pinn(ctx.network_input(measured), ctx.offsets(chosen))
                total += float(ctx.loss_fn(predicted, measured, ctx.good_mask)) * len(chosen)
    finally:
        pinn.train()
    return total / max(len(groups), 1)
