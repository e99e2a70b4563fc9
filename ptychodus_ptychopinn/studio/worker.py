"""The engine on a worker thread: reads the input, runs the generator, sends what to draw.

Everything slow happens here, never on the GUI thread: reading the scan, building the payload,
the run itself, and turning snapshots into downsampled amplitude/phase arrays
(:func:`.frames.make_frame`). Signals are throttled (progress every 0.1 s, frames every
0.3 s, always the last one) so a fast run cannot flood the event loop. Stop sets a flag that
is checked after every event the engine yields (one per batch) and closes the generator,
which ends the run within one batch and frees its memory.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from ..config import ARCHITECTURE_KEYS
from ..rundir import RunDirWriter
from .frames import Frame, illumination_map, make_frame

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.1
FRAME_INTERVAL_S = 0.3
ACTIONS = ('reconstruct', 'infer', 'train')
WORKER_NICE = 5
"""Niceness of the run's thread (Linux: per thread; inherited by the compute threads torch
starts from it), so the GUI thread wins the CPU when the machine is busy. An idle machine
runs the engine at full speed all the same."""


@dataclass(frozen=True)
class Job:
    """One run as the window asks for it."""

    action: str
    input: Path
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    model_path: Path | None = None
    run_dir: Path | None = None
    validation_fraction: float = 0.1


@dataclass
class Outcome:
    """How a run ended and what it left (the window saves from this)."""

    job: Job
    status: str = 'failed'
    """'finished', 'stopped' or 'failed'."""
    message: str = ''
    object: np.ndarray | None = None
    probe: np.ndarray | None = None
    losses: tuple[tuple[int, float], ...] = ()
    validation_losses: tuple[tuple[int, float], ...] = ()
    model: Any = None
    progress: int = 0
    goal: int = 0
    seconds: float = 0.0
    parameters: Any = None
    payload: Any = None
    fit_epochs: int = 0
    refine_probe: bool = False
    device: str = ''


class Worker(QObject):
    """Runs one :class:`Job`; lives on its own QThread (see :class:`.window.StudioWindow`)."""

    progress = Signal(object)
    epoch = Signal(object)
    frame = Signal(object)
    message = Signal(str)
    finished = Signal(object)

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self._stop = threading.Event()
        self._last_progress = 0.0
        self._last_frame = 0.0
        self._pending: tuple[Any, ...] | None = None
        self._illumination: np.ndarray | None = None
        self._writer: RunDirWriter | None = None
        self._scale: Any = None
        self.stop_requested_at: float | None = None
        self.stopped_at: float | None = None
        self.batch_times: list[float] = []
        """perf_counter() of every batch event (tests measure how fast Stop acts)."""
        self.events_after_stop = 0

    def stop(self) -> None:
        """Ask the run to end; thread-safe, returns at once."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.perf_counter()
        self._stop.set()

    @Slot()
    def run(self) -> None:
        outcome = Outcome(self.job)
        started = time.perf_counter()
        _lower_priority()
        try:
            if self.job.run_dir is not None:
                self._writer = RunDirWriter(self.job.run_dir)
            self._run(outcome)
        except Exception as exc:  # noqa: BLE001 - reported in the window, never a crash
            outcome.status = 'failed'
            outcome.message = f'{type(exc).__name__}: {exc}' if not _is_input(exc) else str(exc)
            logger.debug('run failed', exc_info=True)
            self.message.emit('error: ' + outcome.message)
            if not _is_input(exc):
                self.message.emit(traceback.format_exc(limit=4))
            self._record('error', exit_code=2 if _is_input(exc) else 1, message=outcome.message)
        finally:
            outcome.seconds = time.perf_counter() - started
            if self._writer is not None:
                self._writer.close()
            self.stopped_at = time.perf_counter()
            self.finished.emit(outcome)

    # -- the run --------------------------------------------------------------------------

    def _run(self, outcome: Outcome) -> None:
        from .. import engine
        from ..device import resolve_device
        from ..plugin.convert import LossScale
        from ..plugin.layout import load_layout, training_arrays

        job = self.job
        if _warm_up_started:
            wait_for_warm_up(60.0)
        self.message.emit(f'{job.action}: reading {job.input}')
        overrides = dict(job.overrides)
        model = None
        if job.model_path is not None:
            from ..checkpoint import load_model

            model = load_model(job.model_path)
            for key in ARCHITECTURE_KEYS:
                overrides[key] = getattr(model.config.model, key)
            self.message.emit(f'model {job.model_path.name}: {model.config.model}')
        path = Path(job.input)
        if (
            path.is_dir()
            and (path / 'diffraction.h5').is_file()
            and (path / 'product.h5').is_file()
        ):
            scan = load_layout(path)
            arrays, outcome.parameters = scan.arrays, scan.parameters
        else:
            _, arrays = training_arrays(path)
        payload = arrays.payload(preset=job.preset, overrides=overrides)
        outcome.payload = payload
        train_config = payload.config.pinn.train
        device = str(resolve_device(payload.config.execution.device))
        outcome.device = device
        if job.action == 'train':
            fit_epochs, refine_epochs = train_config.epochs, 0
            goal = fit_epochs
            events = engine.train(payload, model, validation_fraction=job.validation_fraction)
        elif job.action == 'infer':
            if model is None:
                raise ValueError('Infer needs a model file')
            fit_epochs, refine_epochs = 0, 0
            goal = engine.progress_goal(payload.config.pinn, fit_epochs=0, refine_epochs=0)
            events = engine.infer(payload, model)
        else:
            fit_epochs, refine_epochs = train_config.epochs, train_config.refine_epochs
            goal = engine.progress_goal(payload.config.pinn)
            events = engine.reconstruct(payload, model)
        outcome.fit_epochs, outcome.goal = fit_epochs, goal
        outcome.refine_probe = train_config.probe_refinement and refine_epochs > 0
        self._scale = LossScale(payload, fit_epochs)
        shape = payload.object_init.shape
        self._illumination = illumination_map(
            payload.probe_modes, payload.positions, (shape[0], shape[1])
        )
        self._record(
            'start',
            goal=goal,
            command=job.action,
            preset=payload.config.preset,
            device=device,
            patterns=payload.num_patterns,
            n=payload.n,
            fit_epochs=fit_epochs,
            refine_epochs=refine_epochs,
        )
        self.message.emit(
            f'{job.action}: {payload.num_patterns} patterns of {payload.n} x {payload.n}, '
            f'preset {payload.config.preset}, {fit_epochs} fit + {refine_epochs} refine epochs '
            f'on {device}'
        )
        self._emit_frame(payload.object_init, payload.probe_modes, 'start', 0, force=True)
        # What opening the scan and the window allocated since the warm-up lives through the
        # run: frozen, a full collection during the run does not walk it (0.1-0.2 s holding
        # the GIL otherwise, measured as a GUI stall; docs/studio.md). Collected first: the
        # earlier runs' cyclic garbage (their refinements and optimisers) frozen would never
        # be freed. Only what is not frozen yet is walked, a few ms.
        gc.collect()
        gc.freeze()
        self._loop(events, outcome, goal, device)

    def _loop(self, events: Any, outcome: Outcome, goal: int, device: str) -> None:
        from .. import engine

        started = time.perf_counter()
        done = 0.0
        stage = 'start'
        loss: float | None = None
        try:
            for event in events:
                if self._stop.is_set():
                    self.events_after_stop += 1
                    break
                if isinstance(event, engine.BatchEvent):
                    self.batch_times.append(time.perf_counter())
                    stage = event.stage
                    if event.loss == event.loss:  # not NaN
                        loss = event.loss
                    fraction = (event.batch + 1) / max(event.num_batches, 1)
                    self._emit_progress(stage, done + fraction, goal, loss, started, device)
                elif isinstance(event, engine.EpochEvent):
                    done = float(event.progress)
                    scaled = self._scale.value(event.progress, event.loss)
                    validation = None
                    if event.validation_loss is not None:
                        validation = self._scale.value(event.progress, event.validation_loss)
                    self.epoch.emit(
                        {
                            'stage': event.stage,
                            'progress': event.progress,
                            'loss': scaled,
                            'validation_loss': validation,
                        }
                    )
                    self._record(
                        'epoch',
                        stage=event.stage,
                        epoch=event.epoch + 1,
                        num_epochs=event.num_epochs,
                        progress=event.progress,
                        goal=goal,
                        loss=event.loss,
                        seconds=round(event.seconds, 4),
                        excess_loss=scaled,
                        **({} if validation is None else {'validation_loss': validation}),
                    )
                    self._emit_progress(event.stage, done, goal, loss, started, device, True)
                elif isinstance(event, engine.SnapshotEvent):
                    done = float(event.progress)
                    outcome.object, outcome.probe = event.object, event.probe
                    outcome.losses, outcome.progress = event.losses, event.progress
                    self._pending = (event.object, event.probe, event.stage, event.progress)
                    self._write_snapshot(event, event.stage)
                    self._record('snapshot', stage=event.stage, progress=event.progress, goal=goal)
                elif isinstance(event, engine.ResultEvent):
                    outcome.object, outcome.probe = event.object, event.probe
                    outcome.losses, outcome.progress = event.losses, event.progress
                    outcome.validation_losses = event.validation_losses
                    outcome.model = event.model
                    outcome.status = 'finished'
                    self._pending = (event.object, event.probe, 'done', event.progress)
                    self._write_snapshot(event, 'done')
                if self._pending is not None:
                    self._flush_frame(force=outcome.status == 'finished')
        finally:
            events.close()  # GeneratorExit at the engine's current batch: the run ends here
        self._flush_frame(force=True)
        seconds = time.perf_counter() - started
        if outcome.status == 'finished':
            last = outcome.losses[-1][1] if outcome.losses else None
            self._record('result', progress=outcome.progress, goal=goal, loss=last, seconds=seconds)
            self._emit_progress('done', float(goal), goal, loss, started, device, True)
            self.message.emit(f'{self.job.action} finished in {seconds:.1f} s')
        else:
            outcome.status = 'stopped'
            outcome.message = f'stopped at progress {outcome.progress}/{goal}'
            self._record('interrupted', progress=outcome.progress, goal=goal, output=None)
            self.message.emit(f'{self.job.action} {outcome.message} after {seconds:.1f} s')

    # -- throttled signals ----------------------------------------------------------------

    def _emit_progress(
        self,
        stage: str,
        done: float,
        goal: int,
        loss: float | None,
        started: float,
        device: str,
        force: bool = False,
    ) -> None:
        now = time.perf_counter()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        elapsed = now - started
        fraction = min(max(done / max(goal, 1), 0.0), 1.0)
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 0 else None
        self.progress.emit(
            {
                'stage': stage,
                'done': done,
                'goal': goal,
                'loss': loss,
                'elapsed': elapsed,
                'eta': eta,
                'device': device,
            }
        )

    def _flush_frame(self, force: bool = False) -> None:
        if self._pending is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_frame < FRAME_INTERVAL_S:
            return
        obj, probe, stage, progress = self._pending
        self._pending = None
        self._emit_frame(obj, probe, stage, progress, force=True)

    def _write_snapshot(self, event: Any, stage: str) -> None:
        """Every snapshot goes to the run directory (atomically), throttled or not."""
        if self._writer is None:
            return
        scale = self._scale
        self._writer.snapshot(
            object=event.object,
            probe=event.probe,
            losses=[(p, scale.value(p, v)) for p, v in event.losses],
            validation_losses=[(p, scale.value(p, v)) for p, v in event.validation_losses]
            if hasattr(event, 'validation_losses')
            else (),
            progress=event.progress,
            stage=stage,
        )

    def _emit_frame(
        self, obj: np.ndarray, probe: np.ndarray, stage: str, progress: int, force: bool = False
    ) -> None:
        self._last_frame = time.perf_counter()
        frame: Frame = make_frame(
            obj, probe, stage=stage, progress=progress, illumination=self._illumination
        )
        self.frame.emit(frame)

    def _record(self, event: str, **values: Any) -> None:
        if self._writer is not None:
            self._writer.event({'event': event, **values})


def _lower_priority() -> None:
    """Raise this thread's niceness by :data:`WORKER_NICE` where the OS allows it per thread."""
    if not sys.platform.startswith('linux'):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE)
    except (OSError, AttributeError):
        logger.debug('could not lower the worker thread priority', exc_info=True)


def _is_input(exc: BaseException) -> bool:
    from ..errors import PinnError

    return isinstance(exc, (PinnError, FloatingPointError, ValueError))


# -- torch warm-up ------------------------------------------------------------------------

_WARM_UP_DONE = threading.Event()
_warm_up_lock = threading.Lock()
_warm_up_started = False


def start_warm_up() -> None:
    """Import torch's lazily loaded optimiser machinery on a background thread, then freeze
    the garbage collector's view of everything loaded so far.

    The first ``torch.optim`` optimiser imports ``torch._dynamo`` (1-2 s), and full garbage
    collections of a process with torch, ptychodus and Qt loaded take 0.2-0.5 s, holding the
    GIL: on a worker thread either stalls the window (docs/gui.md measured both).
    ``gc.freeze()`` moves the loaded modules' objects out of the collector's reach, so later
    full collections only walk what a run allocates.
    """
    global _warm_up_started
    with _warm_up_lock:
        if _warm_up_started:
            return
        _warm_up_started = True
    threading.Thread(target=_warm_up, name='studio-torch-warm-up', daemon=True).start()


def _warm_up() -> None:
    try:
        import torch

        from .. import engine  # noqa: F401 - import cost paid here, not at Reconstruct
        from ..plugin import layout  # noqa: F401

        parameter = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.Adam([parameter], lr=1e-3)
        parameter.square().sum().backward()
        optimizer.step()
    except Exception:  # only a warm-up: the run itself reports real problems
        logger.debug('torch warm-up failed', exc_info=True)
    finally:
        gc.freeze()
        _WARM_UP_DONE.set()


def wait_for_warm_up(timeout: float | None = None) -> bool:
    """True once the warm-up finished (a run started earlier simply waits for it)."""
    return _WARM_UP_DONE.wait(timeout)
