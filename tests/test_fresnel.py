"""The far-field model is ptychodus's: the Fresnel transform, whose input chirp multiplies every
exit wave. Known answers: the chirp's Fresnel numbers from a product's geometry, counts equal
to ``generate_diffraction_data``'s to rounding, and the probe handed back in the object plane."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn.engine import ResultEvent, reconstruct
from ptychodus_ptychopinn.errors import InputError
from ptychodus_ptychopinn.factory import build_payload
from ptychodus_ptychopinn.physics.propagation import fresnel_chirp, predicted_intensity
from ptychodus_ptychopinn.plugin.convert import fresnel_number
from ptychodus_ptychopinn.plugin.simulation import simulate_scan
from ptychodus_ptychopinn.synth.simulate import _windows, expected_counts, window_positions

HC_EV_M = 1.239841984e-6
"""Planck constant x speed of light, eV m."""


def _payload(scan, **kwargs):
    return build_payload(
        scan.counts, scan.bad_pixels, scan.probe_modes, scan.positions_px,
        np.ones_like(scan.truth_array), **kwargs,
    )  # fmt: skip


def test_fresnel_number_from_the_product_geometry() -> None:
    """simulate_scan's geometry: 10 keV, 2 m, 75 um detector pixels, so the object pixel is
    lambda z / (N p) and dx**2 / (lambda z) = lambda z / (N p)**2."""
    for n in (32, 64):
        scan = simulate_scan(pattern_size=n, num_positions=20, photons_per_pattern=1e4, seed=1)
        wavelength = HC_EV_M / 10_000.0
        expected = wavelength * 2.0 / (n * 75e-6) ** 2
        fx, fy = fresnel_number(scan.product)
        assert fx == pytest.approx(expected, rel=1e-6) and fy == pytest.approx(expected, rel=1e-6)
        assert fx * n * n == pytest.approx(0.04408, rel=1e-3)


def test_fresnel_number_of_exported_training_data(tmp_path) -> None:
    """ptychodus's training-data export keeps energy, distance and object pixel size: the same
    Fresnel numbers come back from it as from the layout it was exported from."""
    from ptychodus.api.io import save_training_data

    from ptychodus_ptychopinn.plugin.convert import load_training_file
    from ptychodus_ptychopinn.plugin.layout import load_layout
    from ptychodus_ptychopinn.plugin.simulation import save_layout

    scan = simulate_scan(pattern_size=32, num_positions=20, photons_per_pattern=1e4, seed=1)
    layout = load_layout(save_layout(tmp_path / 'layout', scan))
    save_training_data(tmp_path / 'scan.h5', layout.parameters, inpaint_bad_pixels=False)
    exported = load_training_file(tmp_path / 'scan.h5')
    assert layout.arrays.fresnel_number == pytest.approx(fresnel_number(scan.product), rel=1e-9)
    assert exported.fresnel_number == pytest.approx(layout.arrays.fresnel_number, rel=1e-6)


def test_chirp_is_the_fresnel_transform_s_input_phase() -> None:
    chirp = fresnel_chirp(8, (0.01, 0.02))
    assert chirp is not None and chirp.shape == (8, 8)
    assert np.allclose(np.abs(chirp), 1.0)
    assert chirp[4, 4] == pytest.approx(1.0)  # the centre pixel N // 2
    assert np.angle(chirp[4, 7]) == pytest.approx(np.pi * 0.01 * 9)  # x = 3 along a row
    assert np.angle(chirp[1, 4]) == pytest.approx(np.pi * 0.02 * 9)  # y = -3 along a column
    assert fresnel_chirp(8, (0.0, 0.0)) is None


@pytest.mark.parametrize('n, kind', [(32, 'fractal'), (64, 'dead_leaves')])
def test_counts_equal_ptychodus_s_simulator(n: int, kind: str) -> None:
    """The engine's physics probe reproduces ``generate_diffraction_data`` (noise off) to
    rounding; the Fraunhofer model (no chirp) was off by 0.2-0.4% (L1)."""
    scan = simulate_scan(
        pattern_size=n, num_positions=30, photons_per_pattern=1e5, seed=3, noise=False,
        object_kind=kind,
    )  # fmt: skip
    payload = _payload(scan, preset='fast', fresnel_number=fresnel_number(scan.product))
    corner, frac = window_positions(torch.as_tensor(scan.positions_px), n)
    windows = _windows(torch.as_tensor(scan.truth_array)[None], corner[None], n)[0]
    expected = np.asarray(scan.counts, dtype=float)
    probe = torch.as_tensor(scan.probe_modes)

    def error(chirp: torch.Tensor | None) -> float:
        ours = expected_counts(probe, windows, frac, chirp).numpy()
        return float(np.abs(ours - expected).sum() / expected.sum())

    assert error(torch.as_tensor(payload.chirp)) < 1e-12
    assert error(None) > 1e-3  # Fraunhofer
    # The chirp folded into the probe before its sub-pixel shift: close, not exact.
    folded = torch.as_tensor(payload.chirp) * probe
    ours = expected_counts(folded, windows, frac).numpy()
    assert 1e-12 < float(np.abs(ours - expected).sum() / expected.sum()) < 1e-3


def test_a_chirped_scan_is_fitted_by_the_truth_only_with_the_chirp() -> None:
    """The amplitude misfit of the true object: zero (rounding) under the physics probe, not
    under the object-plane probe; the refinement's fixed point is the truth only with it."""
    scan = simulate_scan(pattern_size=32, num_positions=30, photons_per_pattern=1e6, seed=4,
                         noise=False)  # fmt: skip
    payload = _payload(scan, preset='fast', fresnel_number=fresnel_number(scan.product))
    corner, frac = window_positions(torch.as_tensor(scan.positions_px), 32)
    windows = _windows(torch.as_tensor(scan.truth_array)[None], corner[None], 32)[0]
    from ptychodus_ptychopinn.physics.grid import shifted_probes

    measured = torch.tensor(np.asarray(scan.counts, dtype=float))

    def misfit(chirp: torch.Tensor | None) -> float:
        probes = shifted_probes(torch.as_tensor(scan.probe_modes), frac, chirp)
        predicted = predicted_intensity(probes, windows, 1.0)
        return float((predicted.sqrt() - measured.sqrt()).square().sum() / measured.sum())

    assert misfit(torch.as_tensor(payload.chirp)) < 1e-20
    assert misfit(None) > 1e-7


def test_probe_comes_back_in_the_object_plane() -> None:
    """The engine lights every window with the chirped probe but keeps and returns the
    object-plane one: unchanged when the probe is not refined (the chirped probe differs by
    4e-5 of its power here)."""
    scan = simulate_scan(pattern_size=32, num_positions=40, photons_per_pattern=1e6, seed=5,
                         noise=False)  # fmt: skip
    overrides = {'epochs': 0, 'refine_epochs': 2, 'probe_refinement': False,
                 'device': 'cpu', 'num_threads': 1}  # fmt: skip
    payload = build_payload(
        scan.counts, scan.bad_pixels, scan.probe_modes, scan.positions_px, scan.truth_array,
        preset='fast', overrides=overrides, fresnel_number=fresnel_number(scan.product),
    )  # fmt: skip
    (result,) = [e for e in reconstruct(payload) if isinstance(e, ResultEvent)]
    probe = np.asarray(result.probe).reshape(scan.probe_modes.shape)
    power = np.sum(np.abs(scan.probe_modes) ** 2)
    assert np.sum(np.abs(probe - scan.probe_modes) ** 2) / power < 1e-10
    assert np.sum(np.abs(payload.physics_probe - scan.probe_modes) ** 2) / power > 1e-5


def test_fresnel_number_must_be_two_finite_numbers() -> None:
    scan = simulate_scan(pattern_size=32, num_positions=20, photons_per_pattern=1e4, seed=1)
    with pytest.raises(InputError, match='fresnel_number'):
        _payload(scan, preset='fast', fresnel_number=(float('nan'), 0.0))
    with pytest.raises(InputError, match='fresnel_number'):
        _payload(scan, preset='fast', fresnel_number=(1e-5,))  # type: ignore[arg-type]
