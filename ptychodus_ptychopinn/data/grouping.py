"""Overlap groups: each scan point with its C - 1 nearest neighbours.

The network sees a group's C patterns as channels and its C patches are merged where they
overlap (physics.translate.merge_and_extract). Offsets are relative to the group centroid, so
the merge canvas stays small and symmetric.
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
    offsets = group_positions - group_positions.mean(axis=1, keepdims=True)
    return Groups(members, offsets)
