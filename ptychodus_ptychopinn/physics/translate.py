"""Sub-pixel translation, placement and extraction: the one place that fixes their convention.

Convention (as ptychodus): x is the column axis, y the row axis, and a positive shift moves
features toward larger indices, ``out(j) = in(j - d)``. Shifts are Fourier phase ramps, so they
are exact for band-limited content, differentiable, and extraction with the same offset is the
exact inverse of placement.
"""

from __future__ import annotations

import math

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
    patches: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    size: int,
    channels_out: int | None = None,
) -> torch.Tensor:
    """The overlap constraint: average a group's C patches where they overlap, re-extract them.

    ``patches`` (B, C, N, N) complex, ``offsets`` (B, C, 2) relative to the group centre,
    ``weight`` (N, N) real and non-negative (e.g. probe intensity). Each returned patch is what
    the weighted-average canvas holds under that patch, so neighbours agree where they overlap.
    ``channels_out`` re-extracts only the first few patches (inference needs the anchor only).

    Same maths as ``place`` + sum + ``extract``, arranged for speed: shifting is linear, so the
    C shifted patches are summed in Fourier space and need one inverse FFT, and the weight's
    spectrum is computed once per batch.
    """
    b, c, n, _ = patches.shape
    if c == 1:
        return patches
    k = c if channels_out is None else channels_out
    ramps = _phase_ramp(size, size, offsets[..., 0], offsets[..., 1], patches.dtype)
    spectra = torch.fft.fft2(pad_center(patches * weight, size))
    numerator = torch.fft.ifft2((spectra * ramps).sum(dim=1))
    weight_spectrum = torch.fft.fft2(pad_center(weight.to(patches.dtype), size))
    denominator = torch.fft.ifft2((weight_spectrum * ramps).sum(dim=1)).real
    floor = 1e-3 * denominator.detach().amax(dim=(-2, -1), keepdim=True)
    merged = torch.fft.fft2(numerator / torch.maximum(denominator, floor))
    extracted = torch.fft.ifft2(merged.unsqueeze(1) * ramps[:, :k].conj())
    return crop_center(extracted, n)


def canvas_size(n: int, max_offset: float) -> int:
    """Smallest FFT-friendly canvas that holds N x N patches shifted by up to ``max_offset``.

    The size keeps the parity of N (so padding is symmetric) and has only factors 2, 3 and 5.
    """
    size = n + 2 * (math.ceil(max_offset) + 1)
    while not _smooth(size) or (size - n) % 2:
        size += 1
    return size


def _smooth(value: int) -> bool:
    for factor in (2, 3, 5):
        while value % factor == 0:
            value //= factor
    return value == 1
