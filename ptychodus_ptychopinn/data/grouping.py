"""Overlap groups: each scan point with its C - 1 nearest neighbours.

The network sees a group's C patterns as channels and its C patches are merged where they
overlap (physics.translate.merge_and_extract). Offsets are relative to the integer pixel
nearest the group centroid, so the merge canvas stays small and symmetric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError

GRIDSIZE_HINT = '[PINN] Gridsize = 1 in ptychodus, --gridsize 1 on the command line'


@dataclass(frozen=True)
class Groups:
    """Group members (K, C), anchor first, and their offsets (K, C, 2) as (x, y) pixels."""

    members: np.ndarray
    offsets: np.ndarray

    @property
    def max_offset(self) -> float:
        return float(np.abs(self.offsets).max()) if self.offsets.size else 0.0


def group_neighbours(positions: np.ndarray, gridsize: int, n: int) -> Groups:
    """One group per scan point: the point itself plus its ``gridsize**2 - 1`` nearest neighbours.

    Raises :class:`InputError` when the scan has too few points or the neighbours' windows do
    not overlap the anchor's (the overlap constraint would then have nothing to act on).
    """
    count = positions.shape[0]
    channels = gridsize * gridsize
    if channels == 1:
        return Groups(np.arange(count)[:, None], np.zeros((count, 1, 2)))
    if count < channels:
        raise InputError(
            f'gridsize {gridsize} groups each scan point with {channels - 1} neighbours, but the '
            f'scan has only {count} points. Reconstruct a longer scan, or set gridsize 1 '
            f'({GRIDSIZE_HINT}; the overlap constraint is then off and the result is poorer).'
        )
    tree = cKDTree(positions)
    distances, members = tree.query(positions, k=channels)
    members = np.asarray(members, dtype=np.int64)
    # Put the anchor first even when duplicate positions tie with it.
    for k in np.flatnonzero(members[:, 0] != np.arange(count)):
        row = [k] + [m for m in members[k] if m != k][: channels - 1]
        members[k] = row
    farthest = float(np.max(distances))
    if farthest >= n:
        raise InputError(
            f'some scan points have fewer than {channels - 1} neighbours within one pattern '
            f'width ({n} px; the farthest is {farthest:.1f} px away), so gridsize {gridsize} '
            'cannot tie their patches together. Check the position units, use a denser scan, '
            f'or set gridsize 1 ({GRIDSIZE_HINT}).'
        )
    group_positions = positions[members]
    # Relative to the integer pixel nearest the centroid: the canvas stays small and
    # symmetric, and each offset keeps its member's own sub-pixel fraction (generators that
    # index integer windows and shift the probe by the fraction need it).
    reference = np.round(group_positions.mean(axis=1, keepdims=True))
    offsets = group_positions - reference
    return Groups(members, offsets)


def cluster_offsets(positions: np.ndarray, size: int) -> np.ndarray:
    """For every scan point, it and its ``size - 1`` nearest neighbours: offsets (K, size, 2)
    from the integer pixel nearest their centroid. Pretraining draws its simulated clusters
    from these, so they have the scan's own step, overlap and sub-pixel fractions."""
    count = positions.shape[0]
    size = max(1, min(int(size), count))
    _, members = cKDTree(positions).query(positions, k=size)
    members = np.asarray(members, dtype=np.int64).reshape(count, size)
    points = positions[members]
    return points - np.round(points.mean(axis=1, keepdims=True))


def scan_tiles(positions: np.ndarray, n: int, max_patterns: int) -> list[np.ndarray]:
    """Cover the scan with tiles of at most about ``max_patterns`` points (the whole scan when
    it is small enough). Tiles are cells of a grid over the scan, each widened by half a
    pattern width so that neighbouring tiles overlap (their phases can then be aligned)."""
    count = positions.shape[0]
    if count <= max_patterns:
        return [np.arange(count)]
    low = positions.min(axis=0)
    span = np.maximum(positions.max(axis=0) - low, 1.0)
    cells = max(1.0, 2.0 * count / max_patterns)  # half a tile of points per cell
    per_axis = np.maximum(1, np.round(np.sqrt(cells * span / span[::-1]))).astype(int)
    edges = [np.linspace(low[a], low[a] + span[a], per_axis[a] + 1) for a in (0, 1)]
    margin = n / 2.0
    tiles = []
    for i in range(per_axis[0]):
        for j in range(per_axis[1]):
            inside = (
                (positions[:, 0] >= edges[0][i] - margin)
                & (positions[:, 0] <= edges[0][i + 1] + margin)
                & (positions[:, 1] >= edges[1][j] - margin)
                & (positions[:, 1] <= edges[1][j + 1] + margin)
            )
            if inside.any():
                tiles.append(np.flatnonzero(inside))
    return tiles
