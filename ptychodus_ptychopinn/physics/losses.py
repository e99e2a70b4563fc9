"""Likelihoods over good detector pixels. Bad pixels carry no information and no gradient."""

from __future__ import annotations

import torch

EPS = 1e-6


def poisson_nll(
    predicted: torch.Tensor, measured: torch.Tensor, good: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """Mean over good pixels of ``lam - I log lam`` with ``lam = predicted + eps``.

    ``good`` is a boolean (N, N) mask, True where the pixel is usable. Masked pixels are
    removed by selection (not multiplied by zero), so a NaN in a bad pixel cannot leak.
    """
    lam = predicted + eps
    term = lam - measured * torch.log(lam)
    return _masked_mean(term, good)


def amplitude_loss(
    predicted: torch.Tensor, measured: torch.Tensor, good: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """Gaussian likelihood on amplitudes: mean of ``(sqrt(I_pred) - sqrt(I))**2`` over good pixels.

    Suited to low-noise data where the Poisson weighting over-emphasises the bright centre.
    """
    term = (torch.sqrt(predicted + eps) - torch.sqrt(measured.clamp_min(0.0))).square()
    return _masked_mean(term, good)


def optimum_poisson_nll(
    measured: torch.Tensor, good: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """The Poisson loss of counts predicting themselves: the floor no model can beat."""
    return poisson_nll(measured, measured, good, eps)


LOSS_FUNCTIONS = {'poisson': poisson_nll, 'amplitude': amplitude_loss}


def _masked_mean(term: torch.Tensor, good: torch.Tensor) -> torch.Tensor:
    selected = term[..., good]
    if selected.numel() == 0:
        raise ValueError('every detector pixel is marked bad; nothing to fit')
    return selected.mean()
