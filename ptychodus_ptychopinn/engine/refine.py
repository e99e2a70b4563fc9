"""Stage ``refine``: direct optimisation of the stitched object (and probe) from the network's
answer, under the same forward model and loss as the fit."""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import torch

from ..physics.grid import gather_tiles, shifted_probes, split_positions
from ..physics.propagation import far_field
from .context import RunContext
from .events import Event, SnapshotEvent
from .loop import StopRule, make_scheduler, run_epochs, snapshot_due


def refine(
    ctx: RunContext, initial: np.ndarray, epochs: int, goal: int
) -> Generator[Event, None, tuple[np.ndarray, np.ndarray]]:
    """Adam on the object's pixels (and probe, scale) for ``epochs``; returns object, probe."""
    pinn = ctx.pinn
    train = ctx.config.train
    count = ctx.payload.num_patterns
    batch = train.refine_batch_size
    n = ctx.payload.n
    obj = torch.view_as_real(torch.as_tensor(initial, device=ctx.device).to(ctx.complex)).clone()
    obj.requires_grad_(True)
    probe = pinn.probe.detach().clone().requires_grad_(train.probe_refinement)
    log_scale = pinn.log_scale.detach().clone().requires_grad_(train.learn_scale)
    groups: list[dict[str, Any]] = [{'params': [obj], 'lr': train.refine_learning_rate}]
    if train.probe_refinement:
        groups.append({'params': [probe], 'lr': train.probe_learning_rate})
    if train.learn_scale:
        groups.append({'params': [log_scale], 'lr': 0.01})
    optimizer = torch.optim.Adam(groups)
    scheduler = make_scheduler(optimizer, train.schedule, epochs * math.ceil(count / batch))
    positions = torch.as_tensor(ctx.payload.positions, device=ctx.device)
    corner_all, frac_all = split_positions(positions, n)
    frac_all = frac_all.to(ctx.real)

    def step(chosen: np.ndarray) -> torch.Tensor:
        index = torch.as_tensor(chosen, device=ctx.device)
        tiles = gather_tiles(torch.view_as_complex(obj), corner_all[index], n)
        probes = shifted_probes(torch.view_as_complex(probe), frac_all[index])
        scale = torch.exp(log_scale)
        predicted = far_field(probes * tiles.unsqueeze(1)).abs().square().sum(dim=1)
        return ctx.loss_fn(predicted * scale * scale, ctx.measured(chosen), ctx.good_mask)

    def current() -> tuple[np.ndarray, np.ndarray]:
        image = torch.view_as_complex(obj.detach()).cpu().numpy().astype(initial.dtype)
        return image, torch.view_as_complex(probe.detach()).cpu().numpy()

    def snapshot(epoch: int, last: bool) -> Iterator[Event]:
        if snapshot_due(epoch, last, train.snapshot_every):
            image, probe_now = current()
            yield SnapshotEvent('refine', ctx.progress, image, probe_now, ctx.history())

    yield from run_epochs(
        ctx,
        stage='refine',
        stop=StopRule(
            epochs, train.refine_time_limit, train.plateau_patience, train.plateau_tolerance
        ),
        goal=goal,
        order=lambda: ctx.rng.permutation(count),
        batch_size=batch,
        step=step,
        optimizer=optimizer,
        scheduler=scheduler,
        after_epoch=snapshot,
        nan_hint='lower refine_learning_rate',
    )
    return current()
