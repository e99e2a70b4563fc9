"""The unrolled network's tail: its first half updates the canvas from interleaved sub-batches
of ``tail_batch`` windows in turn (with momentum between sweeps at high dose), its second half
from all windows at once.

Known answers (a group no larger than a sub-batch is unchanged, so training on clusters is;
the sub-batches split the windows; the momentum's dose gate) and what the sequential sweeps
and their momentum are for: on a whole scan, with no training at all, they leave far smaller
smooth phase errors than the whole-scan average of the same depth (ptychodus's metrics
against the truth).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from test_unrolled import _group_inputs, group_scan

from ptychodus_ptychopinn.config import ModelConfig
from ptychodus_ptychopinn.engine import ResultEvent, TrainedModel, infer
from ptychodus_ptychopinn.factory import build_payload
from ptychodus_ptychopinn.model import unrolled
from ptychodus_ptychopinn.model.generators import build_generator
from ptychodus_ptychopinn.model.unrolled import UnrolledGenerator, _Group, sweep_counts
from ptychodus_ptychopinn.plugin.simulation import score_object, simulate_scan


def _windows(scan, tail_batch: int, layers: int = 2, tail: int = 4) -> torch.Tensor:
    _, counts, offsets, physics, canvas = _group_inputs(scan)
    config = ModelConfig(
        n=32, generator='unrolled', width=4, layers=layers, tail_layers=tail,
        tail_batch=tail_batch,
    )  # fmt: skip
    torch.manual_seed(0)
    net = UnrolledGenerator(config).double()
    with torch.no_grad():
        return net(torch.sqrt(counts), offsets, physics, canvas)


def test_a_group_no_larger_than_a_sub_batch_is_updated_as_before() -> None:
    """Known answer: groups of 4 windows with sub-batches of 4 or more (or 0: none) give the
    whole-group tail bit for bit; sub-batches of 1 do not."""
    scan = group_scan()
    whole = _windows(scan, 0)
    assert torch.equal(_windows(scan, 4), whole)
    assert torch.equal(_windows(scan, 16), whole)
    assert not torch.allclose(_windows(scan, 1), whole, atol=1e-6)


def test_sub_batches_split_the_windows_in_a_fixed_order() -> None:
    b, c, m, n, canvas = 2, 10, 1, 4, 13  # ten 4 x 4 windows side by side on a 13 x 13 canvas
    brightness = torch.arange(1, c + 1, dtype=torch.float64)  # window k's probe: k + 1
    probes = brightness[None, :, None, None, None].expand(b, c, m, n, n).to(torch.complex128)
    index = torch.arange(c * n * n).repeat(b, 1)
    amplitude = torch.arange(c, dtype=torch.float64)[None, :, None, None].expand(b, c, n, n)
    good = torch.ones((n, n), dtype=torch.bool)
    group = _Group(probes, index, amplitude, good, torch.ones(b, canvas, canvas), c, n, canvas)
    parts = group.sub_batches(3)
    assert [p.c for p in parts] == [3, 3, 2, 2]  # ceil(10 / 3) = 4 interleaved parts
    taken = [p.amplitude[0, :, 0, 0].long().tolist() for p in parts]
    assert sorted(sum(taken, [])) == list(range(c))
    assert taken == [p.amplitude[0, :, 0, 0].long().tolist() for p in group.sub_batches(3)]
    for part, windows in zip(parts, taken):  # normalised by its own brightest window
        brightest = float(max(windows) + 1) ** 2
        assert float(part.preconditioner.max()) == pytest.approx(1.1 * brightest)
        assert float(part.preconditioner.min()) == pytest.approx(0.1 * brightest)
    assert group.sub_batches(10) == [group] and group.sub_batches(0) == [group]


@functools.lru_cache(maxsize=1)
def _whole_scan():
    return simulate_scan(
        pattern_size=64, num_positions=200, photons_per_pattern=1e6, seed=11,
        object_kind='fractal', phase_range_rad=3.0,
    )  # fmt: skip


def _physics_only(tail_batch: int) -> dict[str, float]:
    """An untrained network (zero correctors: plain physics), one canvas over the scan."""
    scan = _whole_scan()
    overrides = {
        'generator': 'unrolled', 'layers': 1, 'tail_layers': 16, 'tail_batch': tail_batch,
        'device': 'cpu', 'num_threads': 2,
    }  # fmt: skip
    payload = build_payload(
        scan.counts, scan.bad_pixels, scan.probe_modes, scan.positions_px,
        scan.product.object_.get_array()[0], preset='fast', overrides=overrides,
    )  # fmt: skip
    config = payload.config.pinn
    state = build_generator(config.model).state_dict()
    model = TrainedModel(config, state, input_scale=payload.input_scale, intensity_scale=1.0)
    (result,) = [e for e in infer(payload, model) if isinstance(e, ResultEvent)]
    return score_object(result.object, scan.truth, product=scan.product)


def test_sweep_counts_are_the_mean_counts_per_good_pixel() -> None:
    amplitude = torch.full((2, 3, 4, 4), 5.0**0.5, dtype=torch.float64)
    amplitude[..., 0, 0] = 100.0  # a bad pixel: not counted
    good = torch.ones((4, 4), dtype=torch.bool)
    good[0, 0] = False
    assert sweep_counts(amplitude, good) == pytest.approx(5.0)


def test_sweep_momentum_only_from_its_dose_and_depth_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Known answer of the gates: below ``SWEEP_MOMENTUM_MIN_COUNTS``, or with fewer than
    ``SWEEP_MOMENTUM_MIN_SWEEPS`` sweeps, the sweeps are plain (bit for bit as with no momentum
    at all); from both up they are not; one sub-batch (training clusters) never has momentum."""
    scan = group_scan()
    counts = sweep_counts(torch.sqrt(_group_inputs(scan)[1]), torch.ones(32, 32, dtype=torch.bool))
    assert unrolled.SWEEP_MOMENTUM_MIN_SWEEPS == 8

    def tails() -> list[torch.Tensor]:  # 8 and 7 sweeps of one window each, 8 of all four
        return [_windows(scan, 1, tail=16), _windows(scan, 1, tail=14), _windows(scan, 4, tail=16)]

    monkeypatch.setattr(unrolled, 'SWEEP_MOMENTUM', 0.0)
    plain = tails()
    monkeypatch.setattr(unrolled, 'SWEEP_MOMENTUM', 0.5)
    monkeypatch.setattr(unrolled, 'SWEEP_MOMENTUM_MIN_COUNTS', counts * 1.01)
    assert all(torch.equal(a, b) for a, b in zip(tails(), plain))
    monkeypatch.setattr(unrolled, 'SWEEP_MOMENTUM_MIN_COUNTS', counts * 0.99)
    eight, seven, whole = tails()
    assert not torch.allclose(eight, plain[0], atol=1e-6)
    assert torch.equal(seven, plain[1]) and torch.equal(whole, plain[2])


def test_sequential_tail_leaves_smaller_phase_errors_than_the_whole_scan_average(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1 + 16 plain physics layers over 200 points (N = 64, 1e6 photons, 3 rad fractal):
    measured amplitude / phase SSIM 0.944 / 0.761 with the whole-scan average, 0.9955 / 0.985
    with sub-batches of 16 in the first half, 0.9961 / 0.999 with momentum between those
    sweeps (with 8 layers: 0.58 -> 0.91 -> 0.98 phase)."""
    averaged, accelerated = _physics_only(0), _physics_only(16)
    monkeypatch.setattr(unrolled, 'SWEEP_MOMENTUM_MIN_COUNTS', float('inf'))
    sequential = _physics_only(16)
    assert sequential['phase_ssim'] > averaged['phase_ssim'] + 0.15
    assert sequential['phase_ssim'] > 0.95
    assert sequential['amp_ssim'] > max(averaged['amp_ssim'] + 0.03, 0.98)
    assert accelerated['phase_ssim'] > max(sequential['phase_ssim'] + 0.008, 0.995)
    assert accelerated['amp_ssim'] > sequential['amp_ssim']
    assert np.isfinite(accelerated['phase_psnr'])
