"""How well an object explains the measured counts, against what Poisson noise alone leaves.

A network runs the forward model with the scan's probe as given, so a wrong probe gives a
wrong object with no error anywhere. The data say so: the misfit

    sum_good (s sqrt(I_model) - sqrt(I_measured))^2

(``s`` the best global amplitude scale) is divided by the same sum for counts drawn from the
model's own intensities: about 1 when only Poisson noise is left. Measured (docs/pretraining.md):
1.0-1.3 for networks and refinements on simulated scans (1e4 and 1e6 photons), 2.0 on the real
Siemens star under a refined probe, 10-12 under the probe stored with that scan (whose objects
are noise, FRC AUC 0.04-0.12 between halves).
"""

from __future__ import annotations

import numpy as np
import torch

from ..physics.grid import gather_tiles, shifted_probes, split_positions
from ..physics.propagation import predicted_intensity

MISFIT_WARNING = 4.0
"""Above this misfit (times the noise's) the object does not explain the data."""
SAMPLE = 128
"""Scan points the misfit is measured on (spread evenly over the scan): a statistic, not a
fit, so a sample keeps it at a fraction of the inference's time on any scan."""
BATCH = 64
"""Patterns per forward pass."""


def noise_misfit(
    counts: np.ndarray,
    good: np.ndarray,
    probe_modes: np.ndarray,
    positions: np.ndarray,
    obj: np.ndarray,
    device: torch.device | str = 'cpu',
    seed: int = 0,
    chirp: np.ndarray | None = None,
) -> float:
    """The misfit of ``obj`` (H, W) to ``counts`` (K, N, N, DC at the centre) lit by
    ``probe_modes`` (M, N, N) at ``positions`` (K, 2) as (x, y), over the ``good`` (N, N)
    pixels, as a multiple of what Poisson noise alone leaves (deterministic: ``seed``).
    ``chirp``: the detector's Fresnel chirp (``Payload.chirp``)."""
    obj_t = torch.as_tensor(np.asarray(obj), device=device).to(torch.complex64)
    probe = torch.as_tensor(np.asarray(probe_modes), device=device).to(torch.complex64)
    mask = torch.as_tensor(np.asarray(good, dtype=bool), device=device)
    window_chirp = None if chirp is None else torch.as_tensor(chirp, device=device)
    n = probe.shape[-1]
    count = len(positions)
    chosen = np.unique(np.linspace(0, count - 1, min(count, SAMPLE)).round().astype(int))
    models, measured = [], []
    for start in range(0, len(chosen), BATCH):
        part = chosen[start : start + BATCH]
        where = torch.as_tensor(np.asarray(positions, dtype=np.float64)[part], device=device)
        corner, frac = split_positions(where, n)
        probes = shifted_probes(probe, frac.to(torch.float32), window_chirp)
        intensity = predicted_intensity(probes, gather_tiles(obj_t, corner, n), 1.0)
        models.append(intensity[:, mask].sqrt())
        data = torch.as_tensor(np.asarray(counts[part], dtype=np.float32), device=device)
        measured.append(data[:, mask].clamp(min=0).sqrt())
    model, data = torch.cat(models).double(), torch.cat(measured).double()
    power = float(model.square().sum())
    if power <= 0.0:
        return float('inf')
    model = model * (float((model * data).sum()) / power)  # the best global amplitude scale
    generator = torch.Generator(device=device).manual_seed(seed)
    drawn = torch.poisson(model.square(), generator=generator).sqrt()
    noise = float((model - drawn).square().sum())
    return float((model - data).square().sum()) / noise if noise > 0.0 else float('inf')
