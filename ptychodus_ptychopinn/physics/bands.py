"""Split a gradient into spatial-frequency bands: identity forward, filtered backward."""

from __future__ import annotations

import math
from typing import Any

import torch


def gaussian_transfer(
    shape: tuple[int, ...], sigma_px: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The Fourier transfer function (FFT order, last two axes of ``shape``) of a Gaussian
    blur of ``sigma_px`` pixels."""
    fy = torch.fft.fftfreq(shape[-2], dtype=dtype, device=device)[:, None]
    fx = torch.fft.fftfreq(shape[-1], dtype=dtype, device=device)[None, :]
    return torch.exp(-2.0 * (math.pi * sigma_px) ** 2 * (fx.square() + fy.square()))


class _BandGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, transfer: torch.Tensor, low: bool) -> torch.Tensor:
        ctx.save_for_backward(transfer)
        ctx.low = low
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (transfer,) = ctx.saved_tensors
        smooth = torch.fft.ifft2(torch.fft.fft2(grad) * transfer)
        if not grad.is_complex():
            smooth = smooth.real
        return (smooth if ctx.low else grad - smooth), None, None


def band_gradient(x: torch.Tensor, transfer: torch.Tensor, low: bool) -> torch.Tensor:
    """``x`` itself, through which only the gradient's low (``low``) or high band flows back:
    the low band is the gradient filtered by ``transfer``, the high band the rest."""
    out: torch.Tensor = _BandGradient.apply(x, transfer, low)
    return out
