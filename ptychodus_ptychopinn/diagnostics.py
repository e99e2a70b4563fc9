"""Diagnostics that a falling loss cannot fake: do neighbouring patches agree in phase?

Each diffraction pattern is blind to its patch's global phase, so a network can lower the
loss while neighbouring patches disagree and the stitched object blurs. The spread of the
phase difference between overlapping neighbours measures that directly.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from .physics.translate import place


def neighbour_phase_spread(
    patches: np.ndarray, positions: np.ndarray, weight: np.ndarray, pairs: int = 200
) -> float:
    """RMS (radians) over nearest-neighbour pairs of their weighted mean phase difference.

    ``patches`` (K, N, N) complex predicted at ``positions`` (K, 2) as (x, y) pixels;
    ``weight`` (N, N) e.g. the probe intensity. Zero when neighbours agree where they overlap.
    """
    count, n = patches.shape[0], patches.shape[-1]
    _, nearest = cKDTree(positions).query(positions, k=2)
    chosen = np.linspace(0, count - 1, min(pairs, count)).astype(int)
    first, second = chosen, nearest[chosen, 1]
    offsets = positions[second] - positions[first]
    size = n + 2 * (int(np.ceil(np.abs(offsets).max())) + 1)
    size += size % 2 != n % 2
    w = torch.from_numpy(weight.astype(np.float64))
    zero = torch.zeros(len(first), 2, dtype=torch.float64)
    shift = torch.from_numpy(offsets)
    a = place(torch.from_numpy(patches[first]).to(torch.complex128) * w, zero, size)
    b = place(torch.from_numpy(patches[second]).to(torch.complex128) * w, shift, size)
    overlap = (a * b.conj()).sum(dim=(-2, -1))
    return float(np.sqrt(np.mean(np.angle(overlap.numpy()) ** 2)))
