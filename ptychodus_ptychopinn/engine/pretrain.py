"""Stage ``pretrain``: train the network on procedural objects lit by the scan's own probe.

What it takes from the scan: the probe, the pattern size, the bad-pixel mask, the shape of its
overlap groups and its dose (mean counts per pattern). What it never does: train on the
measured patterns or look at the object. Every step draws fresh groups from
:class:`~ptychodus_ptychopinn.synth.simulate.GroupSimulator` (Poisson noise at the scan's dose,
jittered by ``pretrain_dose_jitter``), so there are no epochs over a fixed set; an "epoch" here
is ``pretrain_epoch_groups`` groups, after which a fixed validation set (the same on every rank) is
scored and the stop rule is asked. The loss is supervised, since the truth is known:

    L = sum_r w(r) |O_pred(r) e^{i a} - O_true(r)|^2 / sum_r w(r)    (a: the group's best phase)

with ``w`` the probe intensity (only lit pixels are measured) and ``a`` removing the global
phase that no measurement fixes, plus ``pretrain_physics_weight`` times the amplitude
likelihood of the measured counts (relative to the counts' own scale). The learning rate warms
up over the first 3% of the budget and follows a cosine to 5% of itself at its end; gradients
are clipped at norm 1.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import PretrainConfig
from ..data.grouping import cluster_offsets
from ..distributed import World, broadcast_choice, mean_over_ranks
from ..physics.losses import EPS
from ..synth.objects import ObjectRecipe
from ..synth.simulate import GroupSimulator, SimulatedBatch
from .context import RunContext
from .events import CheckpointEvent, Event, TrainedModel
from .loop import UNBOUNDED, StopRule, run_epochs

VALIDATION_GROUPS = 64
VALIDATION_SEED = 2**31 - 1
WARMUP_FRACTION = 0.03
FINAL_FRACTION = 0.05
CLIP_NORM = 1.0
PROGRESS_UNITS = 1000
"""Progress of a pretraining run, in thousandths of its budget (time or patterns)."""


@dataclass(frozen=True)
class SharedStopRule(StopRule):
    """:class:`StopRule` decided by rank 0 and broadcast: a time budget ends every rank at the
    same epoch, so none waits forever on the others in a collective."""

    device_type: str = 'cpu'

    def reason(self, losses: Sequence[float], elapsed: float, last_epoch: float) -> str | None:
        mine = super().reason(losses, elapsed, last_epoch)
        return broadcast_choice(mine, (None, 'epochs', 'time', 'plateau'), self.device_type)


class _Pretraining:
    """The simulator, optimiser and clock of one pretraining run (methods, not closures, so
    a failed run's traceback does not keep the network alive; see ``refine``)."""

    def __init__(self, ctx: RunContext, world: World) -> None:
        self.ctx = ctx
        self.world = world
        self.config: PretrainConfig = ctx.config.pretrain
        pinn = ctx.pinn
        probe = pinn.probe_modes.detach()
        recipe = ObjectRecipe.from_config(self.config)
        offsets = training_offsets(ctx)
        self.channels = offsets.shape[1]
        seed = ctx.payload.config.execution.seed
        scale = float(pinn.scale.detach())
        self.simulator = GroupSimulator(
            probe, scale, ctx.good_mask, offsets, recipe,
            seed=seed + 1000003 * (world.rank + 1), device=ctx.device,
            dose_jitter=self.config.pretrain_dose_jitter, chirp=pinn.chirp,
        )  # fmt: skip
        validation = GroupSimulator(
            probe, scale, ctx.good_mask, offsets, recipe, seed=VALIDATION_SEED,
            device=ctx.device, chirp=pinn.chirp,
        )  # fmt: skip
        self.validation = validation.draw(VALIDATION_GROUPS)
        weight = probe.abs().square().sum(dim=0)
        self.weight = (weight / weight.max()).to(ctx.real)
        self.mean_count = float(ctx.payload.mean_total_counts) / float(ctx.payload.good.sum())
        self.network: nn.Module = pinn.generator
        if world.distributed:
            ids = [ctx.device.index] if ctx.device.type == 'cuda' else None
            self.network = nn.parallel.DistributedDataParallel(pinn.generator, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            pinn.generator.parameters(), lr=self.config.pretrain_learning_rate, weight_decay=1e-4
        )
        self.started = time.perf_counter()
        self.patterns = 0
        self.last_checkpoint = self.started

    # -- schedule --------------------------------------------------------------------------

    def done_fraction(self) -> float:
        """Share of the budget spent: time or patterns, whichever is further along."""
        shares = []
        if self.config.pretrain_minutes > 0:
            shares.append(
                (time.perf_counter() - self.started) / (60 * self.config.pretrain_minutes)
            )
        if self.config.pretrain_patterns > 0:
            shares.append(self.patterns * self.world.size / self.config.pretrain_patterns)
        return min(max(shares), 1.0)

    def rate_factor(self) -> float:
        frac = self.done_fraction()
        warm = min(1.0, frac / WARMUP_FRACTION)
        cosine = FINAL_FRACTION + (1 - FINAL_FRACTION) * 0.5 * (1 + math.cos(math.pi * frac))
        return warm * cosine

    # -- steps -----------------------------------------------------------------------------

    def loss(self, batch: SimulatedBatch, network: nn.Module) -> torch.Tensor:
        ctx = self.ctx
        pinn = ctx.pinn
        inputs = ctx.network_input(batch.counts.to(ctx.real))
        generator = pinn.generator
        pinn.generator = network  # the DDP wrapper, when there is one, runs the forward
        try:
            predicted, patches = pinn(inputs, batch.offsets)
        finally:
            pinn.generator = generator
        loss = supervised_loss(patches, batch.patches.to(patches.dtype), self.weight)
        weight = self.config.pretrain_physics_weight
        if weight > 0:
            good = ctx.good_mask
            term = (torch.sqrt(predicted + EPS) - torch.sqrt(batch.counts)).square()
            loss = loss + weight * term[..., good].mean() / self.mean_count
        return loss

    def step(self, chosen: np.ndarray) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group['lr'] = self.config.pretrain_learning_rate * self.rate_factor()
        batch = self.simulator.draw(len(chosen))
        self.patterns += len(chosen) * self.channels
        return self.loss(batch, self.network)

    def clip(self) -> None:
        nn.utils.clip_grad_norm_(self.ctx.pinn.generator.parameters(), CLIP_NORM)

    def validate(self) -> float:
        pinn = self.ctx.pinn
        pinn.eval()
        try:
            with torch.no_grad():
                value = float(self.loss(self.validation, pinn.generator))
        finally:
            pinn.train()
        return value

    def after_epoch(self, epoch: int, last: bool) -> Iterator[Event]:
        now = time.perf_counter()
        if last or now - self.last_checkpoint >= self.config.pretrain_checkpoint_every:
            self.last_checkpoint = now
            if self.world.is_main:
                yield CheckpointEvent('pretrain', self.ctx.progress, self.trained_model(), last)

    def trained_model(self) -> TrainedModel:
        """The network now, with its recipe: what it was trained on and for how long."""
        ctx = self.ctx
        seconds = time.perf_counter() - self.started
        return ctx.trained_model().with_metadata(
            kind='pretrained',
            pretrain_families=','.join(self.config.families),
            pretrain_phase_range_rad=f'{self.config.pretrain_phase_range:g}',
            pretrain_amplitude_min=f'{self.config.pretrain_amplitude_min:g}',
            dose_counts_per_pattern=f'{ctx.payload.mean_total_counts:.6g}',
            n=str(ctx.payload.n),
            gridsize=str(ctx.config.model.gridsize),
            probe_modes=str(ctx.payload.probe_modes.shape[0]),
            probe_fingerprint=probe_fingerprint(ctx.payload.physics_probe),
            fresnel_number=','.join(f'{f:.6g}' for f in ctx.payload.fresnel_number),
            pretrain_seconds=f'{seconds:.1f}',
            pretrain_patterns=str(self.patterns * self.world.size),
            pretrain_world_size=str(self.world.size),
            pretrain_cluster=str(self.channels),
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
        )


def supervised_loss(
    predicted: torch.Tensor, truth: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Probe-weighted squared error of a group's patches (B, C, N, N) after removing the one
    global phase per group that no measurement fixes, per lit pixel."""
    correlation = (weight * truth * predicted.conj()).sum(dim=(-3, -2, -1), keepdim=True)
    phasor = correlation / (correlation.abs() + 1e-12)
    error = (weight * (predicted * phasor.detach() - truth).abs().square()).sum(dim=(-2, -1))
    return error.mean() / weight.sum()


def training_offsets(ctx: RunContext) -> np.ndarray:
    """Shapes of the simulated groups: clusters of neighbouring scan points for a
    physics-aware network (``pretrain_cluster``), else the gridsize groups."""
    size = ctx.config.pretrain.pretrain_cluster
    if ctx.pinn.physics_aware and size > 0:
        return cluster_offsets(ctx.payload.positions, size)
    return ctx.payload.groups.offsets


def probe_fingerprint(probe_modes: np.ndarray) -> str:
    """A short hash of the probe's shape, normalised to unit power and rounded, so a model
    can say which probe it was pretrained for (and a scan's probe can be checked against it)."""
    probe = np.asarray(probe_modes, dtype=np.complex128)
    probe = probe / np.sqrt(np.sum(np.abs(probe) ** 2))
    quantised = np.round(np.stack([probe.real, probe.imag]) * 1e3).astype(np.int32)
    return hashlib.sha256(quantised.tobytes() + str(probe.shape).encode()).hexdigest()[:16]


def pretrain_stage(
    ctx: RunContext, world: World, goal: int
) -> Generator[Event, None, TrainedModel]:
    """Pretrain until the budget (minutes or patterns) is spent; checkpoints as events.
    Returns the final model with its recipe."""
    config = ctx.config.pretrain
    run = _Pretraining(ctx, world)
    epochs = _epoch_ceiling(config, world, run.channels)
    stop = SharedStopRule(
        epochs,
        time_limit=60.0 * config.pretrain_minutes,
        device_type=ctx.device.type,
    )
    batch = config.pretrain_batch_size
    yield from run_epochs(
        ctx,
        stage='pretrain',
        stop=stop,
        goal=goal,
        order=lambda: np.arange(config.pretrain_epoch_groups),
        batch_size=batch,
        step=run.step,
        optimizer=run.optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda s: 1.0),
        validate=lambda: mean_over_ranks(run.validate(), ctx.device),
        after_epoch=run.after_epoch,
        before_step=run.clip,
        units=PROGRESS_UNITS,
        units_done=lambda _: int(PROGRESS_UNITS * run.done_fraction()),
        nan_hint='lower pretrain_learning_rate',
    )
    return run.trained_model()


def _epoch_ceiling(config: PretrainConfig, world: World, channels: int) -> int:
    """Epochs that the pattern budget allows (a large ceiling when only time limits)."""
    if config.pretrain_patterns > 0:
        per_epoch = config.pretrain_epoch_groups * channels * world.size
        return max(1, math.ceil(config.pretrain_patterns / per_epoch))
    return UNBOUNDED
