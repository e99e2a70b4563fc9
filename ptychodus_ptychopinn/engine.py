"""Fit, infer and reconstruct as generators of events.

A run is a generator: it yields a :class:`BatchEvent` after every optimiser step, an
:class:`EpochEvent` after every epoch, a :class:`SnapshotEvent` with the current stitched
object and probe every ``snapshot_every`` epochs, and finally one :class:`ResultEvent`.
Closing the generator (what ptychodus's Stop does) ends the run at the next batch and frees
its memory. Stages, in order:

1. ``fit``: self-supervised training of the network on this scan (optionally warm-started);
2. ``infer``: one pass of the network over the scan, stitched onto the object grid;
3. ``refine``: optional direct optimisation of the stitched object (and probe) under the same
   forward model and loss, starting from the network's answer.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np
import torch

from .config import ExecutionConfig, PinnConfig
from .device import release_memory, resolve_device
from .errors import InputError
from .factory import Payload
from .model.pinn import Pinn
from .physics.grid import gather_tiles, shifted_probes, split_positions
from .physics.losses import LOSS_FUNCTIONS
from .physics.propagation import far_field, initial_intensity_scale
from .stitch import Stitcher

LossHistory = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class TrainedModel:
    """A network ready to save or reuse: config, weights (on the CPU) and input scaling."""

    config: PinnConfig
    state: dict[str, torch.Tensor]
    input_scale: float
    intensity_scale: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchEvent:
    stage: str
    epoch: int
    batch: int
    num_batches: int
    loss: float


@dataclass(frozen=True)
class EpochEvent:
    stage: str
    epoch: int
    num_epochs: int
    loss: float
    seconds: float
    progress: int
    goal: int
    validation_loss: float | None = None


@dataclass(frozen=True)
class SnapshotEvent:
    stage: str
    progress: int
    object: np.ndarray
    probe: np.ndarray
    losses: LossHistory


@dataclass(frozen=True)
class ResultEvent:
    object: np.ndarray
    probe: np.ndarray
    losses: LossHistory
    model: TrainedModel
    progress: int
    seconds: float
    validation_losses: LossHistory = ()


Event = Union[BatchEvent, EpochEvent, SnapshotEvent, ResultEvent]


def progress_goal(
    config: PinnConfig, *, fit_epochs: int | None = None, refine_epochs: int | None = None
) -> int:
    """Progress units of a run: one per fit epoch, one per refine epoch, one for inference."""
    fit = config.train.epochs if fit_epochs is None else fit_epochs
    refine = config.train.refine_epochs if refine_epochs is None else refine_epochs
    return fit + refine + 1


@contextlib.contextmanager
def execution_context(execution: ExecutionConfig) -> Iterator[torch.device]:
    """Apply threads, seed and determinism for one run and restore torch's global state after."""
    device = resolve_device(execution.device)
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        if execution.num_threads > 0:
            torch.set_num_threads(execution.num_threads)
        torch.manual_seed(execution.seed)
        if execution.deterministic:
            torch.use_deterministic_algorithms(True)
        yield device
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)
        release_memory(device)


def reconstruct(
    payload: Payload,
    model: TrainedModel | None = None,
    *,
    fit_epochs: int | None = None,
    refine_epochs: int | None = None,
) -> Generator[Event, None, None]:
    """Fit (warm-started from ``model`` if given), infer and stitch, then refine.

    ``fit_epochs`` / ``refine_epochs`` override the config (``infer`` passes 0 and 0).
    """
    config = payload.config.pinn
    if model is not None:
        _check_compatible(model, payload)
        config = replace(config, model=model.config.model)
    n_fit = config.train.epochs if fit_epochs is None else fit_epochs
    n_refine = config.train.refine_epochs if refine_epochs is None else refine_epochs
    goal = progress_goal(config, fit_epochs=n_fit, refine_epochs=n_refine)
    execution = payload.config.execution
    with execution_context(execution) as device:
        run = _Run(payload, config, model, device)
        try:
            yield from run.execute(n_fit, n_refine, goal)
        except BaseException as exc:
            _drop_frame_locals(exc)
            raise
        finally:
            run.close()


def train(
    payload: Payload, model: TrainedModel | None = None, *, validation_fraction: float = 0.1
) -> Generator[Event, None, None]:
    """Train the network on ``payload`` (e.g. exported training data), holding out a share of
    scan points for a validation loss per epoch. The result carries both loss histories."""
    if not 0.0 <= validation_fraction < 1.0:
        raise InputError(f'validation_fraction = {validation_fraction} must be in [0, 1).')
    config = payload.config.pinn
    if model is not None:
        _check_compatible(model, payload)
        config = replace(config, model=model.config.model)
    with execution_context(payload.config.execution) as device:
        run = _Run(payload, config, model, device)
        try:
            yield from run.train_only(config.train.epochs, validation_fraction)
        except BaseException as exc:
            _drop_frame_locals(exc)
            raise
        finally:
            run.close()


def _drop_frame_locals(exc: BaseException) -> None:
    """Forget the locals of the finished frames in ``exc``'s traceback.

    A raised error keeps its traceback's frames, and with them the network, optimiser state
    and batch tensors, alive for as long as anyone holds the error: ptychodus keeps the last
    one until the next run, so a failed run would pin the model (and accelerator memory)
    in a GUI session. File and line information, which is what gets logged, stays.
    """
    traceback.clear_frames(exc.__traceback__)


def infer(payload: Payload, model: TrainedModel) -> Generator[Event, None, None]:
    """Inference only: the pretrained network's stitched object, no fitting, no refinement."""
    return reconstruct(payload, model, fit_epochs=0, refine_epochs=0)


def network_patches(payload: Payload, model: TrainedModel) -> np.ndarray:
    """Each scan point's patch as the network predicts it (after the overlap constraint).

    For diagnostics (e.g. neighbour phase agreement); runs on the payload's device.
    """
    _check_compatible(model, payload)
    config = replace(payload.config.pinn, model=model.config.model)
    with execution_context(payload.config.execution) as device:
        run = _Run(payload, config, model, device)
        try:
            return run.anchor_patches()
        finally:
            run.close()


def _check_compatible(model: TrainedModel, payload: Payload) -> None:
    if model.config.model.n != payload.n:
        raise InputError(
            f'the model was trained on {model.config.model.n} x {model.config.model.n} patterns '
            f'but the data has {payload.n} x {payload.n}; crop or bin the data to match, or '
            'reconstruct without the model.'
        )
    if model.config.model.gridsize != payload.config.pinn.model.gridsize:
        raise InputError(
            f'the model uses gridsize {model.config.model.gridsize} but the settings ask for '
            f'gridsize {payload.config.pinn.model.gridsize}; set gridsize to '
            f'{model.config.model.gridsize} to use this model.'
        )


class _Run:
    """State of one run; ``close`` drops every tensor it holds."""

    def __init__(
        self, payload: Payload, config: PinnConfig, model: TrainedModel | None, device: torch.device
    ) -> None:
        self.payload = payload
        self.config = config
        self.device = device
        execution = payload.config.execution
        self.real = torch.float64 if execution.precision == 'float64' else torch.float32
        self.complex = torch.complex128 if self.real == torch.float64 else torch.complex64
        self.rng = np.random.default_rng(execution.seed)
        good_fraction = float(payload.good.mean())
        probe = torch.as_tensor(payload.probe_modes).to(self.complex)
        scale = initial_intensity_scale(payload.mean_total_counts, probe, good_fraction)
        in_scale = model.input_scale if model is not None else payload.input_scale
        self.pinn: Pinn | None = Pinn(config.model, probe, scale, in_scale, payload.canvas)
        if model is not None:
            self.pinn.generator.load_state_dict(model.state)
        self.pinn.to(device=device, dtype=self.real)
        self.good = torch.as_tensor(payload.good, device=device)
        self.loss_fn = LOSS_FUNCTIONS[config.train.loss]
        self.losses: list[tuple[int, float]] = []
        self.validation_losses: list[tuple[int, float]] = []
        self.progress = 0
        self.started = time.perf_counter()

    def close(self) -> None:
        self.pinn = None
        self.good = None  # type: ignore[assignment]

    # -- batches ----------------------------------------------------------------------------

    def _measured(self, indices: np.ndarray) -> torch.Tensor:
        counts = np.asarray(self.payload.counts[indices.reshape(-1)], dtype=np.float32)
        counts = counts.reshape(*indices.shape, *counts.shape[-2:])
        counts[..., ~self.payload.good] = 0.0
        return torch.from_numpy(counts).to(device=self.device, dtype=self.real)

    @staticmethod
    def _network_input(measured: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale * sqrt(I)``; bad pixels are already zero in ``measured`` (no invented data)."""
        return torch.sqrt(measured) * scale

    def _offsets(self, groups: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(
            self.payload.groups.offsets[groups], device=self.device, dtype=self.real
        )

    # -- stages -----------------------------------------------------------------------------

    def execute(self, n_fit: int, n_refine: int, goal: int) -> Iterator[Event]:
        assert self.pinn is not None
        if n_fit > 0:
            yield from self._fit(n_fit, goal)
        obj = yield from self._infer_and_stitch()
        self.progress += 1
        probe = self.pinn.probe_modes.detach().cpu().numpy()
        yield SnapshotEvent('infer', self.progress, obj, probe, tuple(self.losses))
        if n_refine > 0:
            obj, probe = yield from self._refine(obj, n_refine, goal)
        yield ResultEvent(
            object=obj,
            probe=probe,
            losses=tuple(self.losses),
            model=self._trained_model(),
            progress=self.progress,
            seconds=time.perf_counter() - self.started,
        )

    def _trained_model(self) -> TrainedModel:
        assert self.pinn is not None
        state = {
            k: v.detach().to('cpu', torch.float32).clone()
            for k, v in self.pinn.generator.state_dict().items()
        }
        return TrainedModel(
            config=self.config,
            state=state,
            input_scale=self.pinn.input_scale_value,
            intensity_scale=float(self.pinn.scale.detach()),
        )

    def _fit(
        self,
        epochs: int,
        goal: int,
        subset: np.ndarray | None = None,
        validation: np.ndarray | None = None,
    ) -> Generator[Event, None, None]:
        pinn = self.pinn
        assert pinn is not None
        train = self.config.train
        batch = self.payload.config.execution.batch_size
        subset = np.arange(self.payload.num_patterns) if subset is None else subset
        count = len(subset)
        num_batches = math.ceil(count / batch)
        pinn.probe.requires_grad_(train.probe_refinement)
        pinn.log_scale.requires_grad_(train.learn_scale)
        param_groups = [{'params': list(pinn.generator.parameters()), 'lr': train.learning_rate}]
        if train.learn_scale:
            param_groups.append({'params': [pinn.log_scale], 'lr': train.learning_rate})
        if train.probe_refinement:
            param_groups.append({'params': [pinn.probe], 'lr': train.probe_learning_rate})
        optimizer = torch.optim.Adam(param_groups)
        scheduler = _scheduler(optimizer, train.schedule, epochs * num_batches)
        in_scale = pinn.input_scale_value
        for epoch in range(epochs):
            start = time.perf_counter()
            order = subset[self.rng.permutation(count)]
            stitcher = self._stitcher()
            total = 0.0
            for b in range(num_batches):
                groups = order[b * batch : (b + 1) * batch]
                members = self.payload.groups.members[groups]
                measured = self._measured(members)
                inputs = self._network_input(measured, in_scale)
                predicted, patches = pinn(inputs, self._offsets(groups))
                loss = self.loss_fn(predicted, measured, self.good)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f'the loss became {value} at epoch {epoch + 1}; lower the learning rate.'
                    )
                total += value * len(groups)
                stitcher.add(patches[:, 0].detach(), self._positions(members[:, 0]))
                yield BatchEvent('fit', epoch, b, num_batches, value)
            mean = total / count
            self.progress += 1
            self.losses.append((self.progress, mean))
            held_out = None
            if validation is not None:
                held_out = self._validation_loss(validation)
                self.validation_losses.append((self.progress, held_out))
            yield EpochEvent(
                'fit',
                epoch,
                epochs,
                mean,
                time.perf_counter() - start,
                self.progress,
                goal,
                held_out,
            )
            if validation is None and (
                (epoch + 1) % train.snapshot_every == 0 or epoch + 1 == epochs
            ):
                obj = stitcher.result(self.payload.object_init)
                probe = pinn.probe_modes.detach().cpu().numpy()
                yield SnapshotEvent('fit', self.progress, obj, probe, tuple(self.losses))
        pinn.probe.requires_grad_(False)
        pinn.log_scale.requires_grad_(False)

    def _validation_loss(self, groups: np.ndarray) -> float:
        pinn = self.pinn
        assert pinn is not None
        batch = self.payload.config.execution.inference_batch_size
        total = 0.0
        pinn.eval()
        with torch.no_grad():
            for b in range(0, len(groups), batch):
                chosen = groups[b : b + batch]
                members = self.payload.groups.members[chosen]
                measured = self._measured(members)
                inputs = self._network_input(measured, pinn.input_scale_value)
                predicted, _ = pinn(inputs, self._offsets(chosen))
                total += float(self.loss_fn(predicted, measured, self.good)) * len(chosen)
        pinn.train()
        return total / max(len(groups), 1)

    def train_only(self, epochs: int, validation_fraction: float) -> Iterator[Event]:
        """Fit the network with a held-out share of the scan points; no stitching, no refinement."""
        count = self.payload.num_patterns
        order = self.rng.permutation(count)
        held = int(round(count * validation_fraction)) if count > 1 else 0
        validation = np.sort(order[:held]) if held > 0 else None
        subset = np.sort(order[held:])
        yield from self._fit(epochs, epochs, subset, validation)
        assert self.pinn is not None
        yield ResultEvent(
            object=self.payload.object_init,
            probe=self.pinn.probe_modes.detach().cpu().numpy(),
            losses=tuple(self.losses),
            model=self._trained_model(),
            progress=self.progress,
            seconds=time.perf_counter() - self.started,
            validation_losses=tuple(self.validation_losses),
        )

    def _positions(self, indices: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(
            self.payload.positions[indices], device=self.device, dtype=torch.float64
        )

    def _stitcher(self) -> Stitcher:
        assert self.pinn is not None
        weight = self.pinn.probe_modes.detach().abs().square().sum(dim=0)
        shape = self.payload.object_init.shape
        return Stitcher((shape[0], shape[1]), weight, self.device, self.complex)

    def anchor_patches(self) -> np.ndarray:
        pinn = self.pinn
        assert pinn is not None
        batch = self.payload.config.execution.inference_batch_size
        out = []
        pinn.eval()
        with torch.no_grad():
            for start in range(0, self.payload.num_patterns, batch):
                groups = np.arange(start, min(start + batch, self.payload.num_patterns))
                members = self.payload.groups.members[groups]
                inputs = self._network_input(self._measured(members), pinn.input_scale_value)
                out.append(pinn.patches(inputs, self._offsets(groups), 1)[:, 0].cpu().numpy())
        return np.concatenate(out)

    def _infer_and_stitch(self) -> Generator[Event, None, np.ndarray]:
        """One no-grad pass over every scan point; returns the stitched object (H, W)."""
        pinn = self.pinn
        assert pinn is not None
        batch = self.payload.config.execution.inference_batch_size
        count = self.payload.num_patterns
        num_batches = math.ceil(count / batch)
        stitcher = self._stitcher()
        in_scale = pinn.input_scale_value
        pinn.eval()
        with torch.no_grad():
            for b in range(num_batches):
                groups = np.arange(b * batch, min((b + 1) * batch, count))
                members = self.payload.groups.members[groups]
                inputs = self._network_input(self._measured(members), in_scale)
                patches = pinn.patches(inputs, self._offsets(groups), 1)
                stitcher.add(patches[:, 0], self._positions(groups))
                yield BatchEvent('infer', 0, b, num_batches, float('nan'))
        pinn.train()
        return stitcher.result(self.payload.object_init)

    def _refine(
        self, initial: np.ndarray, epochs: int, goal: int
    ) -> Generator[Event, None, tuple[np.ndarray, np.ndarray]]:
        """Direct optimisation of the object (and probe) from the network's answer."""
        pinn = self.pinn
        assert pinn is not None
        train = self.config.train
        count = self.payload.num_patterns
        batch = train.refine_batch_size
        num_batches = math.ceil(count / batch)
        n = self.payload.n
        obj = torch.view_as_real(
            torch.as_tensor(initial, device=self.device).to(self.complex)
        ).clone()
        obj.requires_grad_(True)
        probe = pinn.probe.detach().clone().requires_grad_(train.probe_refinement)
        log_scale = pinn.log_scale.detach().clone().requires_grad_(train.learn_scale)
        groups: list[dict[str, object]] = [{'params': [obj], 'lr': train.refine_learning_rate}]
        if train.probe_refinement:
            groups.append({'params': [probe], 'lr': train.probe_learning_rate})
        if train.learn_scale:
            groups.append({'params': [log_scale], 'lr': 0.01})
        optimizer = torch.optim.Adam(groups)  # type: ignore[arg-type]
        scheduler = _scheduler(optimizer, train.schedule, epochs * num_batches)
        positions = torch.as_tensor(self.payload.positions, device=self.device)
        corner_all, frac_all = split_positions(positions, n)
        frac_all = frac_all.to(self.real)
        for epoch in range(epochs):
            start = time.perf_counter()
            order = self.rng.permutation(count)
            total = 0.0
            for b in range(num_batches):
                idx = order[b * batch : (b + 1) * batch]
                index = torch.as_tensor(idx, device=self.device)
                image = torch.view_as_complex(obj)
                tiles = gather_tiles(image, corner_all[index], n)
                probes = shifted_probes(torch.view_as_complex(probe), frac_all[index])
                exit_waves = probes * tiles.unsqueeze(1)
                scale = torch.exp(log_scale)
                predicted = far_field(exit_waves).abs().square().sum(dim=1) * scale * scale
                loss = self.loss_fn(predicted, self._measured(idx), self.good)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f'the refinement loss became {value}; lower refine_learning_rate.'
                    )
                total += value * len(idx)
                yield BatchEvent('refine', epoch, b, num_batches, value)
            mean = total / count
            self.progress += 1
            self.losses.append((self.progress, mean))
            yield EpochEvent(
                'refine', epoch, epochs, mean, time.perf_counter() - start, self.progress, goal
            )
            if (epoch + 1) % train.snapshot_every == 0 or epoch + 1 == epochs:
                yield SnapshotEvent(
                    'refine',
                    self.progress,
                    self._object_numpy(obj, initial),
                    _probe_numpy(probe),
                    tuple(self.losses),
                )
        return self._object_numpy(obj, initial), _probe_numpy(probe)

    def _object_numpy(self, obj: torch.Tensor, initial: np.ndarray) -> np.ndarray:
        return torch.view_as_complex(obj.detach()).cpu().numpy().astype(initial.dtype)


def _probe_numpy(probe: torch.Tensor) -> np.ndarray:
    return torch.view_as_complex(probe.detach()).cpu().numpy()


def _scheduler(
    optimizer: torch.optim.Optimizer, kind: str, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    steps = max(steps, 1)
    if kind == 'cosine':
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps)),
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
