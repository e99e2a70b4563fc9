"""Known-answer tests against ptychodus's own simulator: a shared bug would hide otherwise.

On a scan simulated by ``ptychodus.api.simulate`` the true object, lit by our forward model
with our patch convention, must explain the counts almost as well as the counts explain
themselves; an inverse FFT or a half-pixel patch offset must be clearly worse.
"""

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn.physics.grid import gather_tiles, shifted_probes, split_positions
from ptychodus_ptychopinn.physics.losses import optimum_poisson_nll, poisson_nll
from ptychodus_ptychopinn.physics.propagation import initial_intensity_scale
from ptychodus_ptychopinn.plugin.simulation import simulate_scan


@pytest.fixture(scope='module')
def scan():
    return simulate_scan(pattern_size=64, num_positions=120, photons_per_pattern=1e6, seed=3)


def _loss(scan, *, offset: float = 0.0, propagate=None) -> float:
    n = scan.counts.shape[-1]
    obj = torch.from_numpy(scan.truth_array).to(torch.complex128)
    probe = torch.from_numpy(scan.probe_modes).to(torch.complex128)
    positions = torch.from_numpy(scan.positions_px) + offset
    corner, frac = split_positions(positions, n)
    tiles = gather_tiles(obj, corner, n)
    waves = shifted_probes(probe, frac) * tiles.unsqueeze(1)
    if propagate is None:
        spectrum = torch.fft.fftshift(torch.fft.fft2(waves, norm='ortho'), dim=(-2, -1))
    else:
        spectrum = propagate(waves)
    intensity = spectrum.abs().square().sum(dim=1)
    measured = torch.from_numpy(np.asarray(scan.counts, dtype=np.float64))
    good = torch.from_numpy(~scan.bad_pixels)
    # The scale is fitted in closed form (its Poisson optimum), as the engine learns it.
    scale2 = float(measured[:, good].sum() / intensity[:, good].sum())
    return float(poisson_nll(intensity * scale2, measured, good))


def test_true_object_explains_ptychodus_counts_to_within_one_percent(scan) -> None:
    measured = torch.from_numpy(np.asarray(scan.counts, dtype=np.float64))
    good = torch.from_numpy(~scan.bad_pixels)
    optimum = float(optimum_poisson_nll(measured, good))
    ours = _loss(scan)
    assert optimum < 0  # counts of ~1e6 per pattern: the NLL is dominated by -I log I
    assert abs(ours - optimum) / abs(optimum) < 0.01
    half_pixel = _loss(scan, offset=0.5)
    inverse_fft = _loss(
        scan,
        propagate=lambda w: torch.fft.fftshift(torch.fft.ifft2(w, norm='ortho'), dim=(-2, -1)),
    )
    excess = ours - optimum
    # Our excess is the Poisson noise floor (about 0.5 per pixel); measured: half a pixel adds
    # 2.8x that, the inverse FFT 80x.
    assert half_pixel - optimum > 2 * excess
    assert inverse_fft - optimum > 10 * excess


def test_intensity_scale_initialised_from_the_data_is_near_the_truth(scan) -> None:
    probe = torch.from_numpy(scan.probe_modes)
    counts = np.asarray(scan.counts, dtype=np.float64)
    scale = initial_intensity_scale(float(counts.sum(axis=(1, 2)).mean()), probe)
    # With ptychodus's probe normalisation a unit object predicts probe_photon_count counts,
    # so the scale that matches the data is near sqrt(mean transmission) < 1, never 1/N etc.
    assert 0.5 < scale < 1.2
