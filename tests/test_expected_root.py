"""The unbiased root fit at low dose (``physics/expected_root.py``, ``physics/bands.py``) and
where the refinement uses it. Known answers: the Poisson series, its derivative identity,
and the fit of one pixel's mean count from many Poisson samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn.physics.bands import band_gradient, gaussian_transfer
from ptychodus_ptychopinn.physics.expected_root import TABLE_MAX, expected_root


def _series(mean: float, terms: int = 600) -> float:
    """``E[sqrt(N)]`` summed directly (an independent implementation)."""
    if mean == 0.0:
        return 0.0
    return sum(
        math.sqrt(k) * math.exp(k * math.log(mean) - mean - math.lgamma(k + 1.0))
        for k in range(terms)
    )


@pytest.mark.parametrize('mean', [0.0, 0.1, 1.0, 2.4, 10.0, 63.0, 64.0, 100.0, 400.0])
def test_expected_root_is_the_poisson_mean_of_the_root(mean: float) -> None:
    value = float(expected_root(torch.tensor([mean], dtype=torch.float64))[0])
    assert value == pytest.approx(_series(mean), abs=2e-5)
    assert value <= math.sqrt(mean) + 1e-12  # Jensen: always below sqrt(I)


def test_known_values_and_continuity_at_the_table_edge() -> None:
    values = expected_root(torch.tensor([0.1, 1.0], dtype=torch.float64))
    assert values.tolist() == pytest.approx([0.0971, 0.7732], abs=1e-4)
    edge = expected_root(torch.tensor([TABLE_MAX - 1e-9, TABLE_MAX], dtype=torch.float64))
    assert abs(float(edge[1] - edge[0])) < 1e-5


@pytest.mark.parametrize('mean', [0.5, 3.0, 20.0, 90.0])
def test_derivative_follows_the_poisson_identity(mean: float) -> None:
    """``d/dI E[f(N)] = E[f(N + 1) - f(N)]`` for ``N ~ Poisson(I)``."""
    x = torch.tensor([mean], dtype=torch.float64, requires_grad=True)
    expected_root(x).sum().backward()
    assert x.grad is not None
    terms = range(800)
    pmf = [math.exp(k * math.log(mean) - mean - math.lgamma(k + 1.0)) for k in terms]
    identity = sum(p * (math.sqrt(k + 1) - math.sqrt(k)) for k, p in zip(terms, pmf))
    assert float(x.grad[0]) == pytest.approx(identity, rel=5e-3, abs=5e-4)


@pytest.mark.parametrize('mean', [0.3, 1.0, 3.0])
def test_root_fit_of_poisson_counts_is_unbiased_only_with_the_expected_root(mean: float) -> None:
    """One pixel, many Poisson samples: the least-squares root fit finds the intensity ``I``
    whose model root equals the samples' mean root. With ``sqrt(I)`` that ``I`` is far too low
    at a few counts (0.60 instead of 1, about ``I - 1/4`` above); with ``E[sqrt(N)]`` it is
    the true mean."""
    rng = np.random.default_rng(0)
    mean_root = float(np.sqrt(rng.poisson(mean, 400_000)).mean())
    plain = mean_root**2
    lo, hi = 0.0, 10.0 * mean
    for _ in range(60):  # bisection: expected_root increases with I
        mid = 0.5 * (lo + hi)
        if float(expected_root(torch.tensor([mid], dtype=torch.float64))[0]) < mean_root:
            lo = mid
        else:
            hi = mid
    assert lo == pytest.approx(mean, rel=0.02)
    assert plain < mean - 0.2


def test_band_gradient_splits_the_gradient_into_two_bands_that_add_up() -> None:
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(40, 48)) + 1j * rng.normal(size=(40, 48)))
    weight = torch.tensor(rng.normal(size=(40, 48)) + 1j * rng.normal(size=(40, 48)))
    transfer = gaussian_transfer(tuple(x.shape), 1.0, torch.float64, torch.device('cpu'))
    grads = []
    for low in (True, False):
        leaf = x.clone().requires_grad_()
        out = band_gradient(leaf, transfer, low)
        assert torch.equal(out, x)  # the forward pass is the identity
        (out.conj() * weight).real.sum().backward()
        assert leaf.grad is not None
        grads.append(leaf.grad)
    plain = x.clone().requires_grad_()
    (plain.conj() * weight).real.sum().backward()
    assert plain.grad is not None
    torch.testing.assert_close(grads[0] + grads[1], plain.grad)
    # a constant gradient is all low band; the finest checkerboard all high band
    constant = torch.ones(40, 48, dtype=torch.complex128)
    checker = torch.tensor((-1.0) ** np.add.outer(np.arange(40), np.arange(48))).to(x.dtype)
    for field, low_share in ((constant, 1.0), (checker, 0.0)):
        leaf = x.clone().requires_grad_()
        (band_gradient(leaf, transfer, True).conj() * field).real.sum().backward()
        assert leaf.grad is not None
        torch.testing.assert_close(leaf.grad, low_share * field, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ('photons', 'loss', 'modes', 'split'),
    [
        (1e3, 'amplitude', 1, True),
        (1e6, 'amplitude', 1, False),
        (1e3, 'poisson', 1, False),
        (1e3, 'amplitude', 2, False),
    ],
)
def test_refinement_splits_the_fit_only_at_low_dose_with_the_amplitude_loss(
    photons: float, loss: str, modes: int, split: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1e3 photons on 32 x 32 is about 1 count per pixel (under FINAL_BATCH_MAX_COUNTS); with
    2 probe modes the split fit lost amplitude (measured), so it stays off."""
    from ptychodus_ptychopinn.engine import ResultEvent, reconstruct
    from ptychodus_ptychopinn.engine import refine as refine_module
    from ptychodus_ptychopinn.factory import build_payload
    from ptychodus_ptychopinn.plugin.simulation import simulate_scan

    calls: list[tuple[int, ...]] = []

    def counting(intensity: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(intensity.shape))
        return expected_root(intensity)

    monkeypatch.setattr(refine_module, 'expected_root', counting)
    scan = simulate_scan(
        pattern_size=32, num_positions=60, photons_per_pattern=photons, seed=3,
        num_probe_modes=modes,
    )  # fmt: skip
    payload = build_payload(
        scan.counts, scan.bad_pixels, scan.probe_modes, scan.positions_px,
        scan.product.object_.get_array()[0], preset='fast',
        overrides={'num_threads': 2, 'epochs': 0, 'refine_epochs': 2, 'refine_loss': loss,
                   'refine_batch_size': 32},
    )  # fmt: skip
    (result,) = [e for e in reconstruct(payload) if isinstance(e, ResultEvent)]
    assert np.isfinite(result.object).all()
    if split:  # every step, on that batch's patterns: 32 + 28, then (at low dose the last
        # 30% of the epochs take batches 8x larger) all 60 at once
        assert [shape[0] for shape in calls] == [32, 28, 60] and calls[0][-2:] == (32, 32)
    else:
        assert calls == []
