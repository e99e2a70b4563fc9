"""The unrolled generator's physics layers: conventions, consistency with the simulator, and
that the layers alone already move a flat canvas toward the data."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn.config import ModelConfig
from ptychodus_ptychopinn.data.grouping import group_neighbours
from ptychodus_ptychopinn.model.unrolled import (
    Physics,
    UnrolledGenerator,
    _canvas_index,
    _place,
    _take,
    window_positions,
)
from ptychodus_ptychopinn.physics.grid import split_positions
from ptychodus_ptychopinn.physics.translate import canvas_size
from ptychodus_ptychopinn.plugin.simulation import simulate_scan
from ptychodus_ptychopinn.synth.simulate import _windows, expected_counts


@functools.lru_cache(maxsize=1)
def group_scan():
    """60 points of 32 x 32 patterns, noise-free: small groups of the physics layers."""
    return simulate_scan(
        pattern_size=32, num_positions=60, photons_per_pattern=1e6, seed=4, noise=False,
        object_kind='fractal', phase_range_rad=3.0,
    )  # fmt: skip


@pytest.fixture(scope='module')
def scan():
    return group_scan()


def test_window_positions_are_the_engine_s_split() -> None:
    positions = torch.tensor([[10.0, 7.25], [3.5, -2.75]], dtype=torch.float64)
    corner, frac = window_positions(positions, 8)
    reference_corner, reference_frac = split_positions(positions, 8)
    assert torch.equal(corner, reference_corner)
    assert torch.allclose(frac, reference_frac)
    assert corner[0].tolist() == [6, 3] and frac[0].tolist() == [0.5, 0.75]


def test_take_reads_back_what_place_wrote() -> None:
    corner = torch.tensor([[[-3, -2], [1, 0]]])
    index = _canvas_index(corner, 4, 12)
    windows = torch.arange(2 * 16, dtype=torch.float64).reshape(1, 2, 4, 4)
    canvas = _place(windows[:, :1], index[:, :16], 1, 12)
    assert torch.equal(_take(canvas, index[:, :16], 1, 4), windows[:, :1])
    # Canvas centre is the reference pixel: corner (-3, -2) starts at column 3, row 4.
    assert float(canvas[0, 4, 3]) == 0.0 and float(canvas[0, 4, 4]) == 1.0
    with pytest.raises(ValueError, match='canvas'):
        _canvas_index(torch.tensor([[[-7, 0]]]), 4, 12)


def _group_inputs(scan, count=12):
    groups = group_neighbours(scan.positions_px, 2, 32)
    counts = torch.as_tensor(np.asarray(scan.counts), dtype=torch.float64)[groups.members[:count]]
    offsets = torch.as_tensor(groups.offsets[:count])
    probe = torch.as_tensor(scan.probe_modes).to(torch.complex128)
    physics = Physics(probe, 1.0, torch.ones(32, 32, dtype=torch.bool))
    return groups, counts, offsets, physics, canvas_size(32, groups.max_offset)


def test_predicted_counts_are_the_simulator_s_forward_model(scan) -> None:
    groups, counts, offsets, physics, canvas = _group_inputs(scan)
    net = UnrolledGenerator(ModelConfig(n=32, generator='unrolled', width=4, layers=2)).double()
    windows, predicted = net(torch.sqrt(counts), offsets, physics, canvas, with_counts=True)
    _, frac = window_positions(offsets, 32)
    reference = expected_counts(physics.probe, windows, frac)
    assert torch.allclose(predicted, reference, rtol=1e-9, atol=1e-6 * float(reference.max()))


def test_physics_layers_alone_fit_the_data_better_with_depth(scan) -> None:
    """With untrained correctors (zero at start) the network is L group-ePIE steps: more
    layers, counts closer to the measured ones, and the windows closer to the truth."""
    groups, counts, offsets, physics, canvas = _group_inputs(scan)
    positions = torch.as_tensor(scan.positions_px[groups.members[:12]])
    corner, _ = window_positions(positions, 32)
    truth = torch.as_tensor(scan.truth_array)
    true_windows = _windows(truth[None], corner.reshape(1, -1, 2), 32)[0].reshape(12, 4, 32, 32)
    weight = physics.probe.abs().square().sum(0)
    weight = weight / weight.max()

    def errors(layers: int) -> tuple[float, float]:
        config = ModelConfig(n=32, generator='unrolled', width=4, layers=layers, tail_layers=0)
        net = UnrolledGenerator(config).double()
        with torch.no_grad():
            windows, predicted = net(torch.sqrt(counts), offsets, physics, canvas, with_counts=True)
        counts_error = float((predicted - counts).abs().sum() / counts.sum())
        c = (weight * true_windows * windows.conj()).sum() / (weight * windows.abs() ** 2).sum()
        spread = (weight * (true_windows - true_windows.mean()).abs() ** 2).sum()
        return counts_error, float(
            (weight * (windows * c - true_windows).abs() ** 2).sum() / spread
        )

    flat, shallow, deep = errors(0), errors(3), errors(20)
    assert deep[0] < shallow[0] < flat[0]
    assert deep[1] < 0.8 * flat[1]


def test_tail_layers_are_the_learned_layers_without_their_correction(scan) -> None:
    """Known answer: with untrained correctors (zero) and unit steps, L learned layers plus T
    tail layers are exactly L + T learned layers; the tail has no weights of its own."""
    _, counts, offsets, physics, canvas = _group_inputs(scan)

    def windows(layers: int, tail: int) -> torch.Tensor:
        config = ModelConfig(n=32, generator='unrolled', width=4, layers=layers, tail_layers=tail)
        net = UnrolledGenerator(config).double()
        with torch.no_grad():
            return net(torch.sqrt(counts), offsets, physics, canvas)

    split, whole = windows(2, 3), windows(5, 0)
    assert torch.allclose(split, whole, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(split, windows(2, 0), atol=1e-3)
    with_tail = UnrolledGenerator(ModelConfig(n=32, generator='unrolled', layers=2, tail_layers=3))
    bare = UnrolledGenerator(ModelConfig(n=32, generator='unrolled', layers=2, tail_layers=0))
    shapes = {k: v.shape for k, v in with_tail.state_dict().items()}
    assert shapes == {k: v.shape for k, v in bare.state_dict().items()}
