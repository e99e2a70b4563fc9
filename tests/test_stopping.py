"""Stages converge instead of counting: the stopping rule and what a run reports about it."""

import numpy as np
import pytest

from ptychodus_ptychopinn.engine import (
    EpochEvent,
    ResultEvent,
    StageEndEvent,
    progress_goal,
    reconstruct,
)
from ptychodus_ptychopinn.engine.loop import StopRule
from ptychodus_ptychopinn.factory import build_payload
from ptychodus_ptychopinn.plugin.simulation import simulate_scan


def test_epoch_ceiling() -> None:
    rule = StopRule(max_epochs=3)
    assert rule.reason([5.0, 4.0], 0.0, 0.1) is None
    assert rule.reason([5.0, 4.0, 3.0], 0.0, 0.1) == 'epochs'


def test_time_budget_stops_before_an_epoch_that_would_overrun() -> None:
    rule = StopRule(max_epochs=100, time_limit=10.0)
    assert rule.reason([5.0], 7.0, 2.5) is None  # 9.5 s: one more epoch fits
    assert rule.reason([5.0, 4.0], 9.0, 2.5) == 'time'  # 11.5 s would overrun


def test_plateau_is_relative_to_the_stage_gain_whatever_the_loss_offset() -> None:
    rule = StopRule(max_epochs=100, patience=3, tolerance=0.01)
    falling = [-1000.0 - 10 * (1 - 0.5**k) for k in range(8)]  # still gaining ~1% per epoch
    assert rule.reason(falling, 0.0, 0.0) is None
    flat = falling + [falling[-1] - 1e-4] * 3  # gains 3e-4 over 3 epochs, of ~10 in all
    assert rule.reason(flat, 0.0, 0.0) == 'plateau'
    assert rule.reason([-5.0] * 4, 0.0, 0.0) == 'plateau'  # never improved at all
    assert StopRule(max_epochs=100).reason(flat, 0.0, 0.0) is None  # patience 0: never


@pytest.fixture(scope='module')
def scan():
    return simulate_scan(pattern_size=32, num_positions=60, photons_per_pattern=1e5, seed=3)


def _payload(scan, **overrides):
    return build_payload(
        scan.counts,
        scan.bad_pixels,
        scan.probe_modes,
        scan.positions_px,
        scan.product.object_.get_array()[0],
        preset='fast',
        overrides={'num_threads': 1, 'snapshot_every': 1000, **overrides},
    )


def test_refinement_stops_on_a_plateau_and_says_so(scan) -> None:
    payload = _payload(
        scan, epochs=0, refine_epochs=500, plateau_patience=3, plateau_tolerance=0.05
    )
    events = list(reconstruct(payload))
    ends = [e for e in events if isinstance(e, StageEndEvent)]
    assert [e.stage for e in ends] == ['refine']
    assert ends[0].reason == 'plateau' and 3 < ends[0].epochs < 500
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert len(epochs) == ends[0].epochs
    result = events[-1]
    assert isinstance(result, ResultEvent)
    goal = progress_goal(payload.config.pinn)
    assert result.progress == goal == epochs[-1].progress  # the bar ends full
    assert np.all(np.isfinite(result.object))


def test_time_limit_ends_the_fit(scan) -> None:
    payload = _payload(scan, epochs=10_000, refine_epochs=0, fit_time_limit=1.0)
    events = list(reconstruct(payload))
    ends = [e for e in events if isinstance(e, StageEndEvent)]
    assert [(e.stage, e.reason) for e in ends] == [('fit', 'time')]
    longest = max(e.seconds for e in events if isinstance(e, EpochEvent))
    assert ends[0].epochs < 10_000 and ends[0].seconds <= 1.0 + 2 * longest
