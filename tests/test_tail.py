"""The unrolled network's tail: its first half updates the canvas from interleaved sub-batches
of ``tail_batch`` windows in turn, its second half from all windows at once.

Known answers (a group no larger than a sub-batch is unchanged, so training on clusters is;
the sub-batches split the windows) and what the sequential sweeps are for: on a whole scan,
with no training at all, they leave far smaller smooth phase errors than the whole-scan
average of the same depth (ptychodus's metrics against the truth).
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
from ptychodus_ptychopinn.model.generators import build_generator
from ptychodus_ptychopinn.model.unrolled import UnrolledGenerator, _Group
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
        'generator': 'unrolled', 'layers': 1, 'tail_layers': 8, 'tail_batch': tail_batch,
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


def test_sequential_tail_leaves_smaller_phase_errors_than_the_whole_scan_average() -> None:
    """1 + 8 plain physics layers over 200 points (N = 64, 1e6 photons, 3 rad fractal):
    measured phase SSIM 0.58 with the whole-scan average, 0.91 with sub-batches of 16 in the
    first half; amplitude 0.80 -> 0.99."""
    averaged, sequential = _physics_only(0), _physics_only(16)
    assert sequential['phase_ssim'] > averaged['phase_ssim'] + 0.2
    assert sequential['phase_ssim'] > 0.85
    assert sequential['amp_ssim'] > max(averaged['amp_ssim'] + 0.1, 0.95)
    assert np.isfinite(sequential['phase_psnr'])
