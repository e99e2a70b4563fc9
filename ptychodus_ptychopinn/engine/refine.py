"""Stage ``refine``: direct optimisation of the stitched object (and probe) from the network's
answer, under the same far-field forward model.

The update is illumination-preconditioned gradient descent, as ePIE and LSQML do it, not Adam:

    O <- O - step   * dL/dO* / (sum_batch |P_k|^2 + OBJECT_DELTA * max)
    P <- P - pstep  * dL/dP* / (sum_batch |O_k|^2 + PROBE_DELTA  * max)

with ``L`` the batch's summed loss (amplitude by default: ``1/2 sum (sqrt(I_pred) - sqrt(I))^2``).
Both steps are dimensionless: they do not depend on how the probe or the counts are
normalised, so one ``refine_learning_rate`` / ``probe_learning_rate`` serves every scan. The
object step decays geometrically to ``REFINE_FINAL_FRACTION`` of itself over the epoch ceiling.
Measured on the real Siemens star (odd/even halves, FRC AUC; docs/benchmarks.md): Adam on the
object with an absolute probe step gave 0.07; this update with the amplitude loss gives 0.38.
The intensity scale found so far is folded into the probe while refining and divided out of
the probe returned, so the product keeps the input's probe normalisation.

The object returned (and shown in snapshots) is a running average of the iterates over the
last ``refine_average_epochs`` epochs, or 3% of the steps so far if that is shorter (a
window that grows with the run, so a short or still-converging run is not dragged back to
its start). Each minibatch step pulls its patches towards that batch's noisy patterns; the
average removes that step-to-step noise. Measured (100 epochs, 3 epochs' average, fractal
and dead-leaves objects at 1e4 photons, N = 64 and 128, 4 scans): amplitude SSIM +0.006 to
+0.012 and phase SSIM +0.000 to +0.003 on every scan, nothing lost at 1e6.

At low dose (under ``FINAL_BATCH_MAX_COUNTS`` mean counts per good detector pixel) the last
``FINAL_BATCH_SHARE`` of the epoch ceiling runs with batches ``FINAL_BATCH_FACTOR`` times larger:
less step noise once the low spatial frequencies have converged. Measured (N = 128, 1e4 photons,
0.6 counts per pixel, 100 epochs, fractal scan seeds 0-2): phase SSIM +0.0075 to +0.0091; N = 64
at 1e4 +0.001 to +0.004; but at 1e5 and 1e6 a dead-leaves scan still converging at the ceiling
lost 0.005-0.016, hence the dose gate (docs/benchmarks.md). From the answer of a network
pretrained for this probe (``from_network``) the low spatial frequencies have converged
already, so at low dose the refinement starts with the larger batch and its last share runs
with one ``FINAL_BATCH_FACTOR`` times larger again. Measured (N = 64, 1e4 photons, fractal, 20
epochs after the network): amplitude / phase SSIM 0.874 / 0.930 with the usual schedule,
0.879 / 0.932 with this one (docs/pretraining.md).

Also at low dose, with a single probe mode, the amplitude loss is fitted in two bands
(``LOW_DOSE_SPLIT_SIGMA``): the object's low spatial frequencies follow the unbiased fit of
``E[sqrt(N)]`` to ``sqrt(n)``, its fine detail and the probe the plain ``sqrt(I)`` fit, whose
low-count bias damps noise there.

Position refinement (``position_refinement``, from ``position_refinement_start`` epochs on)
moves each scan point by a Gauss-Newton step on its own exit wave,

    r <- r - pos_step * dL/dr / (sum |dP/dr|^2 |O|^2 + POSITION_DELTA * max)

(the derivative flows through the probe's sub-pixel Fourier shift), at most
``POSITION_MAX_STEP_PX`` per update and N / 8 in all, with the mean correction
removed after every step (a common translation of the whole scan is not measurable).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..physics.bands import band_gradient, gaussian_transfer
from ..physics.expected_root import expected_root
from ..physics.grid import gather_tiles, scatter_add_tiles, shifted_probes, split_positions
from ..physics.losses import EPS
from ..physics.propagation import predicted_intensity
from .context import RunContext
from .events import Event, SnapshotEvent
from .loop import StopRule, run_epochs, snapshot_due

OBJECT_DELTA = 0.5
"""Object regulariser, a share of the batch's brightest illumination: steps stay small where
the probe is dim (0.05 was measured noisier on real data, 0.2 to 1.0 alike)."""
PROBE_DELTA = 0.05
"""Probe regulariser, a share of the batch's brightest summed object intensity."""
REFINE_FINAL_FRACTION = 0.3
"""The object step at the epoch ceiling, as a share of the first one."""
FINAL_BATCH_FACTOR = 8
"""At low dose the refine batch is this many times larger over the last
``FINAL_BATCH_SHARE`` of the epoch ceiling (less step noise once the low spatial
frequencies have converged)."""
FINAL_BATCH_SHARE = 0.3
"""The share of the epoch ceiling, at its end, refined with the larger batch."""
FINAL_BATCH_MAX_COUNTS = 3.0
"""Low dose: mean counts per good detector pixel below this (1e4 photons per pattern: 0.6 at
N = 128, 2.4 at N = 64; 1e5 at N = 128: 6.1). Above it the step noise is small and a
still-converging run (dead leaves at 1e5 and 1e6) only loses by the larger batch."""
LOW_DOSE_SPLIT_SIGMA = 0.75 / 64
"""At low dose (the same gate) the amplitude loss's object update takes its low spatial
frequencies, a Gaussian of this sigma times N in object pixels (0.75 px at N = 64), from the
unbiased fit of ``E[sqrt(N)]`` (``physics/expected_root.py``) and the rest from the plain
``sqrt(I)`` fit. The plain fit's bias at a few counts per pixel leaves a smooth phase error;
the unbiased fit over all frequencies removes it but doubles the amplitude noise, since the
bias damps the finest detail like a smoothing prior. Flat starts (docs/pretraining.md): at
N = 64 and 1e4 photons fractal phase SSIM 0.932 -> 0.968, Siemens star 0.897 -> 0.901
(amplitude -0.001); at N = 128 every family gained in both. A sigma fixed in pixels (0.75 at
N = 128) lost amplitude there (fractal -0.06). Single-mode probes only: with 2 modes the
amplitude fell 0.025-0.035 (dead leaves, fractal), the phase up to 0.02."""
AVERAGE_RUN_SHARE = 0.03
"""The averaging window never exceeds this share of the steps taken so far."""
POSITION_DELTA = 0.05
"""Position regulariser, a share of the batch's largest curvature: flat patches move little."""
POSITION_MAX_STEP_PX = 0.5
"""The largest move of one scan point in one update, in object pixels."""
POSITION_MAX_PX_FRACTION = 0.125
"""The largest total correction, as a share of the pattern size N."""


class PreconditionedDescent(torch.optim.Optimizer):
    """``p <- p - lr * gradient_scale * grad / preconditioner``: the caller sets each
    parameter's preconditioner and the gradient scale (loss sum / loss reported) before every
    step, since both depend on the batch."""

    def __init__(self, params: list[dict[str, Any]]) -> None:
        super().__init__(params, {'lr': 1.0, 'max_step': None, 'bound': None})
        self.preconditioners: dict[torch.Tensor, torch.Tensor] = {}
        self.gradient_scale = 1.0

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for param in group['params']:
                if param.grad is not None:
                    update = param.grad / self.preconditioners[param]
                    update = update * (group['lr'] * self.gradient_scale)
                    if group['max_step'] is not None:  # positions: bounded, drift-free
                        update.clamp_(-group['max_step'], group['max_step'])
                        param.sub_(update)
                        param.sub_(param.mean(dim=0))
                        param.clamp_(-group['bound'], group['bound'])
                    else:
                        param.sub_(update)


class _Refinement:
    """One refinement's tensors and its step. Methods, not closures: a failed run's traceback
    keeps the frames of the functions it passed through, and a closure's frame would keep
    the object, probe and optimizer alive through its cells; a method's frame holds ``self``
    only as a local, which the engine clears."""

    def __init__(
        self, ctx: RunContext, initial: np.ndarray, epochs: int, from_network: bool = False
    ) -> None:
        self.ctx = ctx
        self.train = train = ctx.config.train
        self.dtype = initial.dtype
        self.n = n = ctx.payload.n
        self.scale = float(ctx.pinn.scale.detach())
        self.obj = torch.as_tensor(initial, device=ctx.device).to(ctx.complex).clone()
        self.obj.requires_grad_()
        probe = ctx.pinn.probe_modes.detach() * self.scale
        self.probe = probe.clone().requires_grad_(train.probe_refinement)
        self.good_count = int(ctx.good_mask.sum())
        self.amplitude = train.refine_loss == 'amplitude'
        # The loss reported is the per-pixel mean (as the fit's); the update needs the sum.
        self.per_pattern = self.good_count * (0.5 if self.amplitude else 1.0)
        groups: list[dict[str, Any]] = [{'params': [self.obj], 'lr': train.refine_learning_rate}]
        if train.probe_refinement:
            groups.append({'params': [self.probe], 'lr': train.probe_learning_rate})
        positions = torch.as_tensor(ctx.payload.positions, device=ctx.device)
        self.base = positions.to(torch.float64)
        self.offsets = torch.zeros_like(self.base, requires_grad=train.position_refinement)
        self.steps = 0
        self.epochs = max(epochs, 1)
        self.low_dose = ctx.payload.mean_total_counts / self.good_count < FINAL_BATCH_MAX_COUNTS
        self.switch = epochs - round(FINAL_BATCH_SHARE * epochs) if self.low_dose else epochs
        # From a pretrained network's answer the low frequencies have converged: at low dose
        # it starts with the larger batch and ends with one larger again.
        self.base_batch = train.refine_batch_size
        if self.low_dose and from_network:
            self.base_batch *= FINAL_BATCH_FACTOR
        self.low_pass: torch.Tensor | None = None  # the split fit's band filter (low dose)
        if self.low_dose and self.amplitude and self.probe.shape[0] == 1:
            self.low_pass = gaussian_transfer(
                self.obj.shape, LOW_DOSE_SPLIT_SIGMA * n, ctx.real, ctx.device
            )
        self.polish_end: int | None = None  # set when a plateau starts the larger batch early
        self.epoch = -1  # the epoch under way (order() starts each)
        self.epoch_steps = 0  # steps taken in it
        self.batches = math.ceil(ctx.payload.num_patterns / self.base_batch)
        self.average: torch.Tensor | None = None
        self.averaged_steps = 0
        self.position_start = train.position_refinement_start * self.batches
        if train.position_refinement:
            groups.append(
                {
                    'params': [self.offsets],
                    'lr': train.position_learning_rate,
                    'max_step': POSITION_MAX_STEP_PX,
                    'bound': POSITION_MAX_PX_FRACTION * n,
                }
            )
        self.optimizer = PreconditionedDescent(groups)
        decays = [lambda s: REFINE_FINAL_FRACTION ** self._done()]
        decays += [lambda s: 1.0] * (len(groups) - 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decays)

    def batch_size(self, epoch: int) -> int:
        """The refine batch in ``epoch`` (0-based): larger over the last part of the ceiling."""
        size = self.base_batch
        return size * FINAL_BATCH_FACTOR if epoch >= self.switch else size

    def order(self) -> np.ndarray:
        """The next epoch's order; starts the epoch's bookkeeping."""
        self.epoch += 1
        self.epoch_steps = 0
        self.batches = math.ceil(self.ctx.payload.num_patterns / self.batch_size(self.epoch))
        return self.ctx.rng.permutation(self.ctx.payload.num_patterns)

    def _done(self) -> float:
        """The share of the epoch ceiling done (0 to 1), counting the steps of this epoch."""
        epoch = max(self.epoch, 0)
        done = (epoch * self.batches + self.epoch_steps) / (self.epochs * self.batches)
        return min(done, 1.0)

    def step(self, chosen: np.ndarray) -> torch.Tensor:
        """The batch's mean loss; sets the preconditioners its update will use."""
        ctx = self.ctx
        index = torch.as_tensor(chosen, device=ctx.device)
        moving = self.train.position_refinement and self.steps >= self.position_start
        self.steps += 1
        self.epoch_steps += 1
        self._accumulate(self.steps - 1)  # the object as the previous step left it
        offsets = self.offsets[index] if moving else self.offsets[index].detach()
        corner, frac = split_positions(self.base[index] + offsets, self.n)
        probes = shifted_probes(self.probe, frac.to(ctx.real), ctx.pinn.chirp)
        measured = ctx.measured(chosen)
        gradient_scale = self.per_pattern * len(chosen)
        if self.low_pass is not None:
            tiles, term = self._split_term(probes, corner, measured)
            gradient_scale *= 2.0  # the term is the mean of two fits over disjoint bands
        else:
            tiles = gather_tiles(self.obj, corner, self.n)
            predicted = predicted_intensity(probes, tiles, 1.0)
            if self.amplitude:
                term = (torch.sqrt(predicted + EPS) - torch.sqrt(measured)).square()
            else:
                lam = predicted + EPS
                term = lam - measured * torch.log(lam)
        optimizer = self.optimizer
        with torch.no_grad():
            optimizer.gradient_scale = gradient_scale
            lit = torch.zeros(self.obj.shape, dtype=ctx.real, device=ctx.device)
            scatter_add_tiles(lit, probes.abs().square().sum(dim=1), corner)
            optimizer.preconditioners[self.obj] = lit + OBJECT_DELTA * lit.max()
            if self.train.probe_refinement:
                seen = tiles.abs().square().sum(dim=0)
                optimizer.preconditioners[self.probe] = seen + PROBE_DELTA * seen.max()
            if moving:
                power = tiles.abs().square()
                slopes = _probe_slopes(self.probe.detach())
                curvature = torch.einsum('bhw,ahw->ba', power, slopes)
                full = torch.ones_like(self.offsets)
                full[index] = curvature.to(full.dtype) + POSITION_DELTA * float(curvature.max())
                optimizer.preconditioners[self.offsets] = full
        return term[..., ctx.good_mask].sum() / (len(chosen) * self.good_count)

    def _split_term(
        self, probes: torch.Tensor, corner: torch.Tensor, measured: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The tiles and the per-pixel term of the low-dose split fit: the object's update
        takes its low band from the unbiased fit, its high band and the probe's update from
        the plain one (``LOW_DOSE_SPLIT_SIGMA``). The term is the two fits' mean, so the
        loss reported stays on the plain fit's scale."""
        assert self.low_pass is not None
        root = torch.sqrt(measured)
        high = gather_tiles(band_gradient(self.obj, self.low_pass, low=False), corner, self.n)
        low = gather_tiles(band_gradient(self.obj, self.low_pass, low=True), corner, self.n)
        plain = torch.sqrt(predicted_intensity(probes, high, 1.0) + EPS) - root
        unbiased = expected_root(predicted_intensity(probes.detach(), low, 1.0)) - root
        return high, 0.5 * (plain.square() + unbiased.square())

    def _accumulate(self, updates: int) -> None:
        """Fold the object after ``updates`` optimiser steps into the running average."""
        horizon = self.train.refine_average_epochs * self.batches
        if horizon <= 0 or updates == 0 or updates == self.averaged_steps:
            return
        self.averaged_steps = updates
        weight = max(1.0 / horizon, 1.0 / (AVERAGE_RUN_SHARE * updates))
        if self.average is None or weight >= 1.0:
            self.average = self.obj.detach().clone()
        else:
            self.average.lerp_(self.obj.detach(), weight)  # in place: no temporary per step

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """The object (input dtype, averaged over the last steps) and the probe in the
        input's normalisation."""
        self._accumulate(self.steps)  # called between epochs: every step has been applied
        source = self.obj if self.average is None else self.average
        image = source.detach().cpu().numpy().astype(self.dtype)
        return image, (self.probe.detach() / self.scale).cpu().numpy()

    def positions(self) -> np.ndarray | None:
        """The refined positions (K, 2) as (x, y) object pixels; None when they were fixed."""
        if not self.train.position_refinement:
            return None
        return (self.base + self.offsets.detach()).cpu().numpy()

    def snapshot(self, epoch: int, last: bool) -> Iterator[Event]:
        if snapshot_due(epoch, last, self.train.snapshot_every):
            image, probe = self.current()
            yield SnapshotEvent('refine', self.ctx.progress, image, probe, self.ctx.history())


@dataclass(frozen=True)
class _PolishingStopRule(StopRule):
    """:class:`StopRule` that, at low dose, answers a first plateau reached before the
    larger final batch by switching to it for ``FINAL_BATCH_SHARE / (1 - FINAL_BATCH_SHARE)``
    of the epochs run so far (as if the plateau were 70% of the run), and stops after those.
    The epoch ceiling and the time limit still end the stage whenever they come."""

    run: _Refinement | None = None

    def reason(self, losses: Sequence[float], elapsed: float, last_epoch: float) -> str | None:
        why = super().reason(losses, elapsed, last_epoch)
        run = self.run
        if run is None:
            return why
        done = len(losses)
        if run.polish_end is not None:  # polishing: its own end, the ceiling or the time limit
            if why in ('epochs', 'time'):
                return why
            return 'plateau' if done >= run.polish_end else None
        if why == 'plateau' and run.low_dose and done < run.switch:
            run.switch = done
            share = FINAL_BATCH_SHARE / (1.0 - FINAL_BATCH_SHARE)
            run.polish_end = done + max(1, round(share * done))
            return None
        return why


def _probe_slopes(probe: torch.Tensor) -> torch.Tensor:
    """``sum_m |dP_m/dx|^2`` and ``sum_m |dP_m/dy|^2`` (2, N, N): the exit wave's sensitivity
    to a move of the probe, from its Fourier derivative."""
    n = probe.shape[-1]
    real = torch.float64 if probe.dtype == torch.complex128 else torch.float32
    freq = 2j * torch.pi * torch.fft.fftfreq(n, device=probe.device, dtype=real)
    spectrum = torch.fft.fft2(probe)
    dx = torch.fft.ifft2(spectrum * freq[None, None, :])
    dy = torch.fft.ifft2(spectrum * freq[None, :, None])
    return torch.stack([dx.abs().square().sum(0), dy.abs().square().sum(0)])


def refine(
    ctx: RunContext, initial: np.ndarray, epochs: int, goal: int, from_network: bool = False
) -> Generator[Event, None, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Refine from ``initial`` until the stop rule says; returns the object, the probe and
    the refined positions (None unless ``position_refinement``). ``from_network``: the start
    is the answer of a network pretrained for this probe (at low dose the batches then start
    ``FINAL_BATCH_FACTOR`` times larger)."""
    train = ctx.config.train
    run = _Refinement(ctx, initial, epochs, from_network)
    yield from run_epochs(
        ctx,
        stage='refine',
        stop=_PolishingStopRule(
            epochs, train.refine_time_limit, train.plateau_patience, train.plateau_tolerance, run
        ),
        goal=goal,
        order=run.order,
        batch_size=run.batch_size,
        step=run.step,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        after_epoch=run.snapshot,
        nan_hint='lower refine_learning_rate (and probe_learning_rate)',
    )
    obj, probe = run.current()
    return obj, probe, run.positions()
