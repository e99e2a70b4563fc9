"""Dataset-level scaling of the network input, stored with the model for inference."""

from __future__ import annotations

import numpy as np


def input_scale(counts: np.ndarray, good: np.ndarray, chunk: int = 1024) -> float:
    """The constant ``c`` so that ``c * sqrt(I)`` has unit root-mean-square over good pixels.

    Computed in chunks so a long scan in a narrow dtype is never copied whole to float.
    """
    total = 0.0
    pixels = 0
    for start in range(0, counts.shape[0], chunk):
        block = np.asarray(counts[start : start + chunk], dtype=np.float64)[:, good]
        total += float(block.sum())
        pixels += block.size
    mean = total / max(pixels, 1)
    if not mean > 0.0:
        raise ValueError('the good pixels hold no counts')
    return float(1.0 / np.sqrt(mean))
