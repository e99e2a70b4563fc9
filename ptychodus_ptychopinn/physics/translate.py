"""Sub-pixel translation, placement and extraction: the one place that fixes their convention.

Convention (as ptychodus): x is the column axis, y the row axis, and a positive shift moves
features toward larger indices, ``out(j) = in(j - d)``. Shifts are Fourier phase ramps, so they
are exact for band-limited content, differentiable, and extraction with the same offset is the
exact inverse of placement.
"""

from __future__ import annotations

import torch


def _phase_ramp(
    height: int, width: int, dx: torch.Tensor, dy: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    device = dx.device
    fy = torch.fft.fftfreq(height, device=device, dtype=real)
    fx = torch.fft.fftfreq(width, device=device, dtype=real)
    arg = fy.view(*([1] * dy.dim()), height, 1) * dy.to(real)[..., None, None]
    arg = arg + fx.view(*([1] * dx.dim()), 1, width) * dx.to(real)[..., None, None]
    return torch.polar(torch.ones_like(arg), -2.0 * torch.pi * arg)


def fourier_shift(array: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Translate the last two axes of ``array`` by ``(dx, dy)`` pixels (complex result).

    ``dx`` and ``dy`` have the leading shape of ``array`` (or broadcast to it).
    """
    spectrum = torch.fft.fft2(array)
    ramp = _phase_ramp(array.shape[-2], array.shape[-1], dx, dy, spectrum.dtype)
    return torch.fft.ifft2(spectrum * ramp)


def pad_center(array: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last two axes symmetrically from N to ``size`` (``size - N`` even)."""
    n = array.shape[-1]
    pad = (size - n) // 2
    if pad < 0 or (size - n) % 2:
        raise ValueError(f'cannot pad {n} to {size}: the difference must be even and >= 0')
    return torch.nn.functional.pad(array, (pad, pad, pad, pad))


def crop_center(array: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pad_center`: the central ``n x n`` of the last two axes."""
    start = (array.shape[-1] - n) // 2
    return array[..., start : start + n, start : start + n]


def place(patches: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Place patches (..., N, N) on centred canvases (..., size, size) at ``offsets`` (..., 2).

    ``offsets[..., 0]`` is x (columns), ``offsets[..., 1]`` is y (rows), in pixels from the
    canvas centre.
    """
    return fourier_shift(pad_center(patches, size), offsets[..., 0], offsets[..., 1])


def extract(canvases: torch.Tensor, offsets: torch.Tensor, n: int) -> torch.Tensor:
    """Exact inverse of :func:`place`: read the N x N patch at ``offsets`` from each canvas."""
    return crop_center(fourier_shift(canvases, -offsets[..., 0], -offsets[..., 1]), n)


def merge_and_extract(
    patches: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor, size: int
) -> torch.Tensor:
    """The overlap constraint: average a group's C patches where they overlap, re-extract them.

    ``patches`` (B, C, N, N) complex, ``offsets`` (B, C, 2) relative to the group centre,
    ``weight`` (N, N) real and non-negative (e.g. probe intensity). Each returned patch is what
    the weighted-average canvas holds under that patch, so neighbours agree where they overlap.
    """
    if patches.shape[1] == 1:
        return patches
    numerator = place(patches * weight, offsets, size).sum(dim=1)
    weights = weight.to(patches.dtype).expand_as(patches)
    denominator = place(weights, offsets, size).sum(dim=1).real
    floor = 1e-3 * denominator.detach().amax(dim=(-2, -1), keepdim=True)
    merged = numerator / torch.maximum(denominator, floor)
    n = patches.shape[-1]
    return extract(merged.unsqueeze(1).expand(-1, patches.shape[1], -1, -1), offsets, n)


def canvas_size(n: int, max_offset: float) -> int:
    """Smallest even-padded canvas that holds N x N patches shifted by up to ``max_offset``."""
    pad = int(torch.ceil(torch.tensor(max_offset)).item()) + 1
    return n + 2 * pad
