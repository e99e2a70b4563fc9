"""Far-field propagation and the intensity model.

Convention (ptychodus data): ``Psi = fftshift(fft2(psi, norm='ortho'))`` with DC at the array
centre; predicted counts are ``s**2 * sum_m |Psi_m|**2`` over incoherent probe modes ``m``.

ptychodus's far-field simulator propagates with the Fresnel transform, which multiplies the exit
wave by the input quadratic phase :func:`fresnel_chirp` before the FFT (the Fraunhofer model
drops it). The chirp is the same for every window: the engine multiplies each window's shifted
probe by it (``grid.shifted_probes``) and keeps the probe itself in the object plane, as
ptychodus does. The counts then match ``generate_diffraction_data`` to rounding
(tests/test_fresnel.py); without it they differed by 0.2-0.4% (L1), and the objects carried a
smooth, bowl-shaped phase error (docs/engine.md).
"""

from __future__ import annotations

import numpy as np
import torch


def fresnel_chirp(n: int, fresnel_number: tuple[float, float]) -> np.ndarray | None:
    """The Fresnel transform's input phase ``exp(i pi (Fx X**2 + Fy Y**2))`` (N, N), with
    ``X = column - N // 2``, ``Y = row - N // 2`` and ``F`` the per-pixel Fresnel numbers
    ``dx**2 / (lambda z)``, ``dy**2 / (lambda z)`` (as ptychodus's FresnelTransformPropagator);
    None when both are 0 (Fraunhofer). sample_data's geometry (10 keV, 2 m, 75 um pixels):
    ``F N**2`` = 0.044, a phase of 0.007 rad across its 19-pixel probe.
    """
    fx, fy = fresnel_number
    if fx == 0.0 and fy == 0.0:
        return None
    axis = np.arange(n, dtype=np.float64) - n // 2
    phase = np.pi * (fx * axis[None, :] ** 2 + fy * axis[:, None] ** 2)
    return np.exp(1j * phase)


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
