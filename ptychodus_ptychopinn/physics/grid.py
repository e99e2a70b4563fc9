"""Patches on the object grid: where a scan position's N x N window lies, gather and scatter.

Convention (ptychodus): a position ``r`` in object pixels is where the probe array's centre
pixel ``(N - 1) / 2`` lands, so the window's first pixel is at ``r - (N - 1) / 2``. It splits
into an integer ``corner`` and a fraction ``frac`` in [0, 1).
"""

from __future__ import annotations

import torch

from .translate import fourier_shift


def split_positions(positions: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (K, 2) as (x, y) -> integer window corners (K, 2) and fractions (K, 2)."""
    start = positions.to(torch.float64) - (n - 1) / 2.0
    corner = torch.floor(start)
    return corner.long(), (start - corner)


def _flat_indices(corner: torch.Tensor, size: int, width: int, height: int) -> torch.Tensor:
    rows = torch.arange(size, device=corner.device)
    ys = (corner[:, 1, None] + rows).clamp(0, height - 1)
    xs = (corner[:, 0, None] + rows).clamp(0, width - 1)
    return ys[:, :, None] * width + xs[:, None, :]


def gather_tiles(image: torch.Tensor, corner: torch.Tensor, size: int) -> torch.Tensor:
    """Tiles (B, size, size) of ``image`` (H, W) whose first pixels are ``corner`` (B, 2).

    Indices outside the image are clamped to its edge.
    """
    height, width = image.shape[-2:]
    index = _flat_indices(corner, size, width, height)
    return image.reshape(-1)[index]


def scatter_add_tiles(image: torch.Tensor, tiles: torch.Tensor, corner: torch.Tensor) -> None:
    """Add tiles (B, S, S) into ``image`` (H, W) in place at ``corner`` (kept inside by callers)."""
    height, width = image.shape[-2:]
    index = _flat_indices(corner, tiles.shape[-1], width, height)
    image.view(-1).index_add_(0, index.reshape(-1), tiles.reshape(-1))


def extract_patches(image: torch.Tensor, positions: torch.Tensor, n: int) -> torch.Tensor:
    """The N x N patches of ``image`` centred at ``positions``, bilinearly interpolated.

    ``patch[j] = image[r - (N - 1) / 2 + j]``: the patch the network is asked to predict. Bilinear
    (not Fourier) interpolation, because an object crop is not periodic: a Fourier shift of it
    rings from the wrapped edges. The forward model avoids interpolating the object at all
    (see :func:`shifted_probes`).
    """
    corner, frac = split_positions(positions, n)
    tiles = gather_tiles(image, corner, n + 1)
    fx = frac[:, 0, None, None].to(tiles.real.dtype)
    fy = frac[:, 1, None, None].to(tiles.real.dtype)
    rows = (1 - fy) * tiles[:, :-1, :] + fy * tiles[:, 1:, :]
    return (1 - fx) * rows[:, :, :-1] + fx * rows[:, :, 1:]


def shifted_probes(
    probe_modes: torch.Tensor, frac: torch.Tensor, chirp: torch.Tensor | None = None
) -> torch.Tensor:
    """Probe modes (M, N, N) shifted by each fraction (B, 2) -> (B, M, N, N), times the
    detector's Fresnel ``chirp`` (N, N) when given (``physics.propagation.fresnel_chirp``).

    Lighting the integer window with the shifted probe is the same physics as lighting the
    sub-pixel patch with the centred probe, and avoids interpolating the (sharper) object.
    The chirp belongs to the window, not the probe, so it is applied after the shift (before
    it, each pattern would move by up to ``F N / 2`` pixels: 5e-4 of the counts, L1).
    """
    shifted = fourier_shift(probe_modes.unsqueeze(0), frac[:, None, 0], frac[:, None, 1])
    return shifted if chirp is None else shifted * chirp.to(shifted.dtype)
