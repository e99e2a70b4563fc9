"""Streaming reassembly of predicted patches onto the product's object grid.

Each patch is placed at its scan position (the same sub-pixel convention as
``physics.grid.extract_patches``), weighted by the summed probe intensity, and the weighted
sum is divided by the summed weights. Pixels that nothing lit keep the initial object's values.
Memory: two canvases of the object's size plus one batch of tiles, whatever the scan length.
"""

from __future__ import annotations

import numpy as np
import torch

from .physics.grid import scatter_add_tiles, split_positions
from .physics.translate import shift_spectrum

LIT_FRACTION = 1e-3
"""A pixel counts as lit when its summed weight exceeds this fraction of the maximum."""


class Stitcher:
    """Accumulate ``add`` batches, then ``result`` the stitched object."""

    def __init__(
        self,
        shape: tuple[int, int],
        weight: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype = torch.complex64,
    ) -> None:
        height, width = shape
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        # One pixel of margin on each side takes the sub-pixel tiles of edge windows.
        self._numerator = torch.zeros((height + 2, width + 2), dtype=dtype, device=device)
        self._denominator = torch.zeros((height + 2, width + 2), dtype=real, device=device)
        self._weight = weight.to(device=device, dtype=real)
        # The weight is the same for every patch: its padded spectrum is computed once.
        self._n = int(weight.shape[-1])
        # The weight is the same for every patch: its padded spectrum is computed once.
        self._weight_spectrum = torch.fft.fft2(self._weight.to(dtype), s=(self._n + 2,) * 2)
        self._shape = shape

    @torch.no_grad()
    def add(self, patches: torch.Tensor, positions: torch.Tensor) -> None:
        """Add patches (B, N, N) predicted at ``positions`` (B, 2) as (x, y) object pixels."""
        corner, frac = split_positions(positions.to(self._weight.device), self._n)
        weighted = patches.to(self._numerator.dtype) * self._weight
        # Tile pixel m holds patch pixel m - 1 - frac: its object pixel is corner - 1 + m, and
        # the canvas margin shifts that by +1, so the tile starts at canvas index ``corner``.
        # The FFT pads the patch at the end, so the shift is 1 + frac (one pixel of margin).
        spectra = torch.fft.fft2(weighted, s=(self._n + 2,) * 2)
        shift = frac.to(self._weight.dtype) + 1.0
        tiles = shift_spectrum(spectra, shift[:, 0], shift[:, 1])
        tile_weights = shift_spectrum(self._weight_spectrum, shift[:, 0], shift[:, 1]).real
        scatter_add_tiles(self._numerator, tiles, corner)
        scatter_add_tiles(self._denominator, tile_weights.to(self._denominator.dtype), corner)

    @torch.no_grad()
    def result(self, initial: np.ndarray) -> np.ndarray:
        """The stitched (H, W) object; unlit pixels come from ``initial``."""
        numerator = self._numerator[1:-1, 1:-1]
        denominator = self._denominator[1:-1, 1:-1]
        peak = float(denominator.max()) if denominator.numel() else 0.0
        lit = (
            denominator > LIT_FRACTION * peak
            if peak > 0
            else torch.zeros_like(denominator, dtype=torch.bool)
        )
        values = numerator / torch.where(lit, denominator, torch.ones_like(denominator))
        out = np.array(initial, copy=True)
        lit_np = lit.cpu().numpy()
        out[lit_np] = values.cpu().numpy()[lit_np].astype(out.dtype)
        return out

    def lit_mask(self) -> np.ndarray:
        denominator = self._denominator[1:-1, 1:-1]
        peak = float(denominator.max())
        return (denominator > LIT_FRACTION * peak).cpu().numpy()
