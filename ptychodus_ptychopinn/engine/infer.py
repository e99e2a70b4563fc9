"""Stage ``infer``: one no-grad pass of the network over the scan, synchronised and stitched.

What runs, and which patches are kept:
- the ``cnn`` generator: every scan point's group, its anchor patch only (the others are not
  needed for the output);
- the ``unrolled`` generator, whose patches come from one canvas and agree by construction:
  tiles of the whole scan (``data.grouping.scan_tiles``; one tile when its windows hold at most
  :data:`TILE_PIXELS` pixels), every window of every tile. Its physics layers then act
  across the whole tile, so the low spatial frequencies are tied together as in a
  ptychographic solve (measured: one canvas over the scan beat gridsize groups on every family).

A patch-wise network cannot know its patch's global phase, so before stitching the per-patch
phase offsets are solved from the overlaps (``phase_sync``); a tile's windows share one offset
(solved per patch, a 2000-point scan in tiles of 512 fell to 0.72 phase SSIM; per tile 0.97).
Inputs are prepared batch by batch; what is kept between the pass and the stitch is each
patch's lit crop.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import numpy as np
import torch

from ..data.grouping import scan_tiles
from ..phase_sync import PhaseSynchroniser
from ..stitch import Stitcher
from .context import RunContext
from .events import BatchEvent, Event

TILE_PIXELS = 512 * 256 * 256
"""Most window pixels (scan points x N x N) on one inference canvas: memory grows with them.
The whole scan is one canvas up to 8192 points at N = 64, 2048 at N = 128, 512 at N = 256.
Measured (docs/pretraining.md): one canvas over 1000-4000 points beat tiles of 512-2048 on
average, and the tiles' seams cost up to 0.07 phase SSIM."""


def tile_patterns(n: int) -> int:
    """Most scan points on one inference canvas at pattern size ``n``."""
    return max(1, TILE_PIXELS // (n * n))


def _batches(
    ctx: RunContext, groups: np.ndarray, channels_out: int | None
) -> Generator[tuple[np.ndarray, torch.Tensor], None, None]:
    """(scan indices (B, c), patches (B, c, N, N)) per inference batch, network in eval mode."""
    pinn = ctx.pinn
    batch = ctx.payload.config.execution.inference_batch_size
    pinn.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(groups), batch):
                chosen = groups[start : start + batch]
                members = ctx.payload.groups.members[chosen]
                inputs = ctx.network_input(ctx.measured(members))
                patches = pinn.patches(inputs, ctx.offsets(chosen), channels_out)
                yield members[:, : patches.shape[1]], patches
    finally:
        pinn.train()


def _tile_batches(
    ctx: RunContext, tiles: list[np.ndarray]
) -> Generator[tuple[np.ndarray, torch.Tensor], None, None]:
    """(scan indices (1, T), windows (1, T, N, N)) per tile of the scan, one canvas each."""
    pinn = ctx.pinn
    positions = ctx.payload.positions
    pinn.eval()
    try:
        with torch.no_grad():
            for tile in tiles:
                points = positions[tile]
                offsets = points - np.round(points.mean(axis=0, keepdims=True))
                inputs = ctx.network_input(ctx.measured(tile[None]))
                offsets_t = torch.as_tensor(offsets[None], device=ctx.device, dtype=ctx.real)
                yield tile[None], pinn.patches(inputs, offsets_t)
    finally:
        pinn.train()


def _passes(ctx: RunContext) -> tuple[Generator[tuple[np.ndarray, torch.Tensor], None, None], int]:
    """The batches of the inference pass and how many there are."""
    if ctx.pinn.physics_aware:
        n = ctx.payload.n
        tiles = scan_tiles(ctx.payload.positions, n, tile_patterns(n))
        return _tile_batches(ctx, tiles), len(tiles)
    groups = np.arange(ctx.payload.num_patterns)
    batch = ctx.payload.config.execution.inference_batch_size
    return _batches(ctx, groups, 1), math.ceil(len(groups) / batch)


def infer_and_stitch(ctx: RunContext) -> Generator[Event, None, np.ndarray]:
    """The network's patches, phase-synchronised and stitched; returns the (H, W) object."""
    batch = ctx.payload.config.execution.inference_batch_size
    passes, num_batches = _passes(ctx)
    weight = ctx.pinn.probe_modes.detach().abs().square().sum(dim=0)
    sync = PhaseSynchroniser(weight)
    for b, (members, patches) in enumerate(passes):
        n = patches.shape[-1]
        positions = ctx.pinn.patch_positions(ctx.payload.positions[members.reshape(-1)])
        sync.add(patches.reshape(-1, n, n), positions, consistent=ctx.pinn.physics_aware)
        yield BatchEvent('infer', 0, b, num_batches, float('nan'))
    crops = sync.crops()
    if ctx.pinn.physics_aware and num_batches == 1:  # one canvas: consistent already
        phasors = torch.ones(len(crops), dtype=crops.dtype)
    else:
        phasors = torch.as_tensor(sync.phasors())
    positions = sync.positions()
    boxed = torch.zeros_like(weight)
    boxed[sync.rows, sync.cols] = weight[sync.rows, sync.cols]
    shape = ctx.payload.object_init.shape
    stitcher = Stitcher((shape[0], shape[1]), boxed, ctx.device, ctx.complex)
    n = weight.shape[-1]
    for start in range(0, len(crops), batch):
        part = crops[start : start + batch] * phasors[start : start + batch, None, None]
        patches = torch.zeros((len(part), n, n), dtype=ctx.complex, device=ctx.device)
        patches[:, sync.rows, sync.cols] = part.to(ctx.device, ctx.complex)
        stitcher.add(patches, torch.as_tensor(positions[start : start + batch]))
    return stitcher.result(ctx.payload.object_init)


def anchor_patches(ctx: RunContext) -> np.ndarray:
    """Each scan point's patch as the network predicts it (K, N, N), for diagnostics (no
    phase synchronisation)."""
    groups = np.arange(ctx.payload.num_patterns)
    return np.concatenate([p[:, 0].cpu().numpy() for _, p in _batches(ctx, groups, 1)])
