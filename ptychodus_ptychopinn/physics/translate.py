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
    """``exp(-2 pi i (fx dx + fy dy))`` on the FFT grid, shape (..., height, width).

    Built as the outer product of two 1-D ramps: the trigonometry costs H + W per shift
    instead of H x W, which matters on the inference path.
    """
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    device = dx.device
    fy = torch.fft.fftfreq(height, device=device, dtype=real)
    fx = torch.fft.fftfreq(width, device=device, dtype=real)
    arg_y = -2.0 * torch.pi * fy * dy.to(real)[..., None]
    arg_x = -2.0 * torch.pi * fx * dx.to(real)[..., None]
    ramp_y = torch.polar(torch.ones_like(arg_y), arg_y)
    ramp_x = torch.polar(torch.ones_like(arg_x), arg_x)
    return ramp_y[..., :, None] * ramp_x[..., None, :]


def fourier_shift(array: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Translate the last two axes of ``array`` by ``(dx, dy)`` pixels (complex result).

    ``dx`` and ``dy`` have the leading shape of ``array`` (or broadcast to it).
    """
    return shift_spectrum(torch.fft.fft2(array), dx, dy)


def shift_spectrum(spectrum: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """:func:`fourier_shift` of an array given by its 2-D spectrum (reuse one FFT for many)."""
    ramp = _phase_ramp(spectrum.shape[-2], spectrum.shape[-1], dx, dy, spectrum.dtype)
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

    Same maths as ``place`` + sum + ``extract``, arranged for speed (this is on the inference
    path): shifting is linear, so the C shifted patches are summed in Fourier space and need
    one inverse FFT; zero-padding happens inside the FFT (its corner placement is folded into
    the ramps as an integer shift); and the weights' sum, whose spectrum is the weight's times
    a sum of separable ramps, is one small batched matrix product instead of C full products.
    """
    b, c, n, _ = patches.shape
    if c == 1:
        return patches
    k = c if channels_out is None else channels_out
    corner = (size - n) // 2  # the centred canvas holds the patch from this pixel on
    dx = offsets[..., 0] + corner
    dy = offsets[..., 1] + corner
    real = torch.float64 if patches.dtype == torch.complex128 else torch.float32
    freqs = torch.fft.fftfreq(size, device=patches.device, dtype=real)
    ramp_y = torch.polar(torch.ones_like(dy[..., None]), -2.0 * torch.pi * freqs * dy[..., None])
    ramp_x = torch.polar(torch.ones_like(dx[..., None]), -2.0 * torch.pi * freqs * dx[..., None])
    spectra = torch.fft.fft2(patches * weight, s=(size, size))
    numerator = torch.fft.ifft2((spectra * ramp_y[..., :, None] * ramp_x[..., None, :]).sum(dim=1))
    weight_spectrum = torch.fft.fft2(weight.to(patches.dtype), s=(size, size))
    ramp_sum = torch.bmm(ramp_y.transpose(1, 2), ramp_x)  # (B, size, size) = sum_c y_c x_c^T
    denominator = torch.fft.ifft2(weight_spectrum * ramp_sum).real
    floor = 1e-3 * denominator.detach().amax(dim=(-2, -1), keepdim=True)
    merged = torch.fft.fft2(numerator / torch.maximum(denominator, floor))
    back_y = ramp_y[:, :k].conj()
    back_x = ramp_x[:, :k].conj()
    extracted = torch.fft.ifft2(merged.unsqueeze(1) * back_y[..., :, None] * back_x[..., None, :])
    return extracted[..., :n, :n]


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
