"""Far-field propagation and the intensity model.

Convention (ptychodus data): ``Psi = fftshift(fft2(psi, norm='ortho'))`` with DC at the array
centre; predicted counts are ``s**2 * sum_m |Psi_m|**2`` over incoherent probe modes ``m``.
"""

from __future__ import annotations

import torch


def far_field(exit_wave: torch.Tensor) -> torch.Tensor:
    """Propagate exit waves (..., N, N) to the far field, DC at the centre (orthonormal)."""
    spectrum = torch.fft.fft2(exit_wave, norm='ortho')
    return torch.fft.fftshift(spectrum, dim=(-2, -1))


def predicted_intensity(
    probe_modes: torch.Tensor, patches: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """Counts predicted for object patches (B, N, N) lit by probe modes (M, N, N), or by each
    patch's own (B, M, N, N) (sub-pixel shifted), -> (B, N, N).

    The modes add incoherently: intensities, not amplitudes, are summed.
    """
    exit_waves = probe_modes * patches.unsqueeze(-3)
    intensity = far_field(exit_waves).abs().square().sum(dim=-3)
    return intensity * (scale * scale)


def initial_intensity_scale(
    counts_mean_total: float, probe_modes: torch.Tensor, good_fraction: float = 1.0
) -> float:
    """Scale ``s`` that makes a unit-amplitude object predict the measured mean total counts.

    By Parseval (orthonormal FFT) a unit object predicts ``sum |P|^2`` counts in total, so
    ``s**2 = mean total counts / sum |P|^2``. ``good_fraction`` corrects for counts that
    were not measured (bad pixels); probe scale conventions vary between codes, so the scale
    always comes from the data, never from an assumed probe normalisation.
    """
    power = float(probe_modes.abs().square().sum())
    if power <= 0.0 or counts_mean_total <= 0.0:
        raise ValueError('cannot initialise the intensity scale from an empty probe or no counts')
    return (counts_mean_total / (power * good_fraction)) ** 0.5
