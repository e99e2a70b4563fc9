"""The data-misfit check after inference: the true object leaves only Poisson noise (misfit
about 1); a wrong probe or an object that does not fit leaves far more, and ``infer`` says so
(the network uses the scan's probe as given, so a wrong probe gives a wrong object silently)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_tail import _whole_scan

from ptychodus_ptychopinn.engine import ResultEvent, TrainedModel, infer
from ptychodus_ptychopinn.engine.misfit import MISFIT_WARNING, noise_misfit
from ptychodus_ptychopinn.factory import build_payload
from ptychodus_ptychopinn.model.generators import build_generator
from ptychodus_ptychopinn.plugin.simulation import simulate_scan

WARNING_TEXT = 'explains the measured patterns poorly'


def test_truth_leaves_only_noise_and_a_wrong_probe_does_not() -> None:
    scan = simulate_scan(
        pattern_size=32, num_positions=60, photons_per_pattern=1e5, seed=5,
        object_kind='dead_leaves', phase_range_rad=2.0,
    )  # fmt: skip
    good = ~scan.bad_pixels

    def misfit(probe: np.ndarray, obj: np.ndarray) -> float:
        return noise_misfit(scan.counts, good, probe, scan.positions_px, obj)

    assert 0.85 < misfit(scan.probe_modes, scan.truth_array) < 1.2
    # the same at another global scale and phase (ambiguities the misfit must not see)
    assert 0.85 < misfit(scan.probe_modes, 0.5j * scan.truth_array) < 1.2
    wrong = np.roll(scan.probe_modes, 3, axis=-1)  # the probe three pixels off
    assert misfit(wrong, scan.truth_array) > MISFIT_WARNING
    assert misfit(scan.probe_modes, np.ones_like(scan.truth_array)) > MISFIT_WARNING


def _infer_physics_only(probe_modes: np.ndarray) -> ResultEvent:
    """An untrained unrolled network (plain physics) on a 200-point N = 64 scan."""
    scan = _whole_scan()
    overrides = {'generator': 'unrolled', 'layers': 1, 'device': 'cpu', 'num_threads': 2}
    payload = build_payload(
        scan.counts, scan.bad_pixels, probe_modes, scan.positions_px,
        scan.product.object_.get_array()[0], preset='fast', overrides=overrides,
    )  # fmt: skip
    config = payload.config.pinn
    state = build_generator(config.model).state_dict()
    model = TrainedModel(config, state, input_scale=payload.input_scale, intensity_scale=1.0)
    return next(e for e in infer(payload, model) if isinstance(e, ResultEvent))


def test_infer_warns_when_the_network_object_does_not_explain_the_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scan = _whole_scan()
    with caplog.at_level(logging.INFO, logger='ptychodus_ptychopinn'):
        _infer_physics_only(scan.probe_modes)
    assert WARNING_TEXT not in caplog.text
    assert 'data misfit of the network object' in caplog.text
    caplog.clear()
    defocused = np.fft.ifft2(  # the probe with a quadratic phase across its spectrum: defocus
        np.fft.fft2(scan.probe_modes) * np.exp(2j * np.fft.fftfreq(64)[:, None] ** 2 * 400)
        * np.exp(2j * np.fft.fftfreq(64)[None, :] ** 2 * 400)
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger='ptychodus_ptychopinn'):
        _infer_physics_only(defocused.astype(np.complex64))
    assert WARNING_TEXT in caplog.text
