"""Stage ``infer``: one no-grad pass of the network over the scan, stitched on the object grid.

Only each group's anchor patch is computed after the overlap merge (the others are not
needed for the output), and inputs are prepared batch by batch, so memory follows the batch.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import numpy as np
import torch

from .context import RunContext
from .events import BatchEvent, Event


def _anchor_batches(ctx: RunContext) -> Generator[tuple[np.ndarray, torch.Tensor], None, None]:
    """(scan indices, anchor patches (B, N, N)) per inference batch, network in eval mode."""
    pinn = ctx.pinn
    batch = ctx.payload.config.execution.inference_batch_size
    count = ctx.payload.num_patterns
    pinn.eval()
    try:
        with torch.no_grad():
            for start in range(0, count, batch):
                groups = np.arange(start, min(start + batch, count))
                members = ctx.payload.groups.members[groups]
                inputs = ctx.network_input(ctx.measured(members))
                yield groups, pinn.patches(inputs, ctx.offsets(groups), 1)[:, 0]
    finally:
        pinn.train()


def infer_and_stitch(ctx: RunContext) -> Generator[Event, None, np.ndarray]:
    """Every scan point's anchor patch, stitched; returns the (H, W) object."""
    num_batches = math.ceil(
        ctx.payload.num_patterns / ctx.payload.config.execution.inference_batch_size
    )
    stitcher = ctx.stitcher()
    for b, (groups, patches) in enumerate(_anchor_batches(ctx)):
        stitcher.add(patches, ctx.positions(groups))
        yield BatchEvent('infer', 0, b, num_batches, float('nan'))
    return stitcher.result(ctx.payload.object_init)


def anchor_patches(ctx: RunContext) -> np.ndarray:
    """Each scan point's patch as the network predicts it (K, N, N), for diagnostics."""
    return np.concatenate([patches.cpu().numpy() for _, patches in _anchor_batches(ctx)])
