"""Procedural objects and the on-the-fly simulator, checked against ptychodus's own simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn.config import OBJECT_FAMILIES
from ptychodus_ptychopinn.data.grouping import group_neighbours
from ptychodus_ptychopinn.model.unrolled import window_positions
from ptychodus_ptychopinn.physics.propagation import fresnel_chirp
from ptychodus_ptychopinn.plugin.convert import fresnel_number
from ptychodus_ptychopinn.plugin.simulation import simulate_scan
from ptychodus_ptychopinn.synth.objects import ObjectRecipe, generate_objects
from ptychodus_ptychopinn.synth.simulate import GroupSimulator, _windows, expected_counts

CPU = torch.device('cpu')


@pytest.mark.parametrize('family', OBJECT_FAMILIES)
def test_each_family_stays_inside_the_recipe_ranges(family: str) -> None:
    recipe = ObjectRecipe((family,), phase_range_max=3.0, amplitude_min=0.4)
    objects = generate_objects(recipe, 16, 48, torch.Generator().manual_seed(1), CPU)
    amplitude, phase = objects.abs(), objects.angle()
    # Blurring is a convex combination, so ranges hold up to float rounding.
    assert float(amplitude.min()) >= 0.4 - 1e-4 and float(amplitude.max()) <= 1.0 + 1e-4
    spans = phase.flatten(1).amax(1) - phase.flatten(1).amin(1)
    assert float(spans.max()) <= 3.0 + 1e-4
    # Not flat: every scene has structure.
    assert float(amplitude.flatten(1).std(1).min() + phase.flatten(1).std(1).min()) > 1e-3


def test_objects_are_reproducible_from_the_seed_and_differ_between_seeds() -> None:
    recipe = ObjectRecipe()
    a = generate_objects(recipe, 4, 32, torch.Generator().manual_seed(5), CPU)
    b = generate_objects(recipe, 4, 32, torch.Generator().manual_seed(5), CPU)
    c = generate_objects(recipe, 4, 32, torch.Generator().manual_seed(6), CPU)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_windows_are_integer_crops_at_their_corners() -> None:
    scene = torch.arange(20 * 20, dtype=torch.float64).reshape(20, 20).to(torch.complex128)
    corners = torch.tensor([[[3, 5], [0, 12]]])  # (x, y)
    windows = _windows(scene[None], corners, 4)[0]
    assert torch.equal(windows[0], scene[5:9, 3:7])
    assert torch.equal(windows[1], scene[12:16, 0:4])


def test_simulated_counts_match_ptychodus_s_simulator() -> None:
    """Known answer: the simulator's forward model of the truth at the scan's positions, with
    the detector's Fresnel chirp, reproduces the expected counts of ptychodus's
    ``generate_diffraction_data`` (noise off) to rounding, for smooth and sharp objects; a
    half-pixel slip is clearly worse."""
    for kind in ('fractal', 'dead_leaves'):
        scan = simulate_scan(
            pattern_size=32, num_positions=40, photons_per_pattern=1e5, seed=3, noise=False,
            object_kind=kind,
        )  # fmt: skip
        truth = torch.as_tensor(scan.truth_array)
        probe = torch.as_tensor(scan.probe_modes)
        expected = np.asarray(scan.counts, dtype=float)
        chirp = torch.as_tensor(fresnel_chirp(32, fresnel_number(scan.product)))

        def error(
            shift: float, scan=scan, truth=truth, probe=probe, expected=expected, chirp=chirp
        ) -> float:
            positions = torch.as_tensor(scan.positions_px) + shift
            corner, frac = window_positions(positions, 32)
            windows = _windows(truth[None], corner[None], 32)[0]
            ours = expected_counts(probe, windows, frac, chirp).numpy()
            return float(np.abs(ours - expected).sum() / expected.sum())

        assert error(0.0) < 1e-12, kind
        assert error(0.5) > 1e-2


def test_group_simulator_draws_groups_shaped_like_the_scan_at_its_dose() -> None:
    scan = simulate_scan(pattern_size=32, num_positions=60, photons_per_pattern=2e4, seed=1)
    groups = group_neighbours(scan.positions_px, 2, 32)
    probe = torch.as_tensor(scan.probe_modes).to(torch.complex64)
    good = torch.ones(32, 32, dtype=torch.bool)
    good[3, 5] = False
    simulator = GroupSimulator(probe, 1.0, good, groups.offsets, ObjectRecipe(), seed=2, device=CPU)
    batch = simulator.draw(24)
    assert batch.counts.shape == (24, 4, 32, 32) and batch.patches.shape == (24, 4, 32, 32)
    assert float(batch.counts[..., 3, 5].abs().max()) == 0.0  # bad pixels carry nothing
    assert torch.all(batch.counts == torch.round(batch.counts))  # Poisson counts
    # Offsets come from the scan's own groups.
    table = groups.offsets.reshape(len(groups.offsets), -1)
    drawn = batch.offsets.double().numpy().reshape(24, -1)
    nearest = np.abs(drawn[:, None, :] - table[None]).max(axis=-1).min(axis=1)
    assert nearest.max() < 1e-4
    # Dose: a unit-power probe at scale 1 predicts sum |P|^2 per unit object; objects transmit
    # less than 1, so the mean counts sit a little below, never above.
    unit = float(probe.abs().square().sum())
    mean_counts = float(batch.counts.sum(dim=(-2, -1)).mean())
    assert 0.2 * unit < mean_counts < 1.05 * unit
