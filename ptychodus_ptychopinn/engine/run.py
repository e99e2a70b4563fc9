"""The public entry points: which stages a run has, in which order, and its clean-up.

Stages, in order: ``fit`` (self-supervised training of the network on this scan, optionally
warm-started), ``infer`` (one pass of the network, stitched onto the object grid), ``refine``
(optional direct optimisation of the stitched object and probe, from the network's answer).
Every entry point is a generator of events (see ``events``); closing it (what ptychodus's Stop
does) ends the run at the next batch and frees its memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace

import numpy as np
import torch

from ..config import PinnConfig
from ..distributed import World
from ..errors import InputError
from ..factory import Payload
from .context import RunContext, drop_frame_locals, execution_context
from .events import Event, ResultEvent, SnapshotEvent, TrainedModel
from .fit import fit_network
from .infer import anchor_patches, infer_and_stitch
from .misfit import MISFIT_WARNING, noise_misfit
from .pretrain import PROGRESS_UNITS, pretrain_stage, probe_fingerprint
from .refine import refine

logger = logging.getLogger(__name__)


def progress_goal(
    config: PinnConfig, *, fit_epochs: int | None = None, refine_epochs: int | None = None
) -> int:
    """Progress units of a run: one per fit epoch, one per refine epoch, one for inference."""
    fit = config.train.epochs if fit_epochs is None else fit_epochs
    refine_ = config.train.refine_epochs if refine_epochs is None else refine_epochs
    return fit + refine_ + 1


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
    config = _model_config(payload, model)
    n_fit = config.train.epochs if fit_epochs is None else fit_epochs
    n_refine = config.train.refine_epochs if refine_epochs is None else refine_epochs
    goal = progress_goal(config, fit_epochs=n_fit, refine_epochs=n_refine)

    def stages(ctx: RunContext) -> Iterator[Event]:
        if n_fit > 0:
            yield from fit_network(ctx, n_fit, goal)
        if n_fit > 0 or model is not None:
            obj = yield from infer_and_stitch(ctx)
            if n_refine == 0:  # the network's answer is the result: say if the data disagree
                _report_misfit(payload, obj, ctx.device)
        else:  # an untrained network's answer is noise: refine from the product's object
            obj = payload.object_init
        ctx.progress += 1
        probe = ctx.probe_numpy()
        yield SnapshotEvent('infer', ctx.progress, obj, probe, ctx.history())
        positions = None
        if n_refine > 0:
            pretrained = model is not None and _pretrained_for_this_probe(model, payload)
            obj, probe, positions = yield from refine(ctx, obj, n_refine, goal, pretrained)
        if positions is not None:
            moved = np.linalg.norm(positions - payload.positions, axis=1)
            logger.info(
                'position refinement: %d scan points moved by %.3f px RMS, %.3f px at most',
                len(moved),
                float(np.sqrt(np.mean(moved**2))),
                float(moved.max()),
            )
        yield _result(ctx, obj, probe, positions=positions)

    yield from _run(payload, config, model, stages)


def train(
    payload: Payload, model: TrainedModel | None = None, *, validation_fraction: float = 0.1
) -> Generator[Event, None, None]:
    """Train the network on ``payload`` (e.g. exported training data), holding out a share of
    scan points for a validation loss per epoch. The result carries both loss histories."""
    if not 0.0 <= validation_fraction < 1.0:
        raise InputError(f'validation_fraction = {validation_fraction} must be in [0, 1).')
    config = _model_config(payload, model)

    def stages(ctx: RunContext) -> Iterator[Event]:
        count = payload.num_patterns
        order = ctx.rng.permutation(count)
        held = int(round(count * validation_fraction)) if count > 1 else 0
        validation = np.sort(order[:held]) if held > 0 else None
        epochs = config.train.epochs
        yield from fit_network(ctx, epochs, epochs, np.sort(order[held:]), validation)
        yield _result(ctx, payload.object_init, ctx.probe_numpy())

    yield from _run(payload, config, model, stages)


def pretrain(
    payload: Payload, model: TrainedModel | None = None, *, world: World | None = None
) -> Generator[Event, None, None]:
    """Pretrain the network for ``payload``'s probe, dose, mask and scan shape on procedural
    objects (``engine.pretrain``); the measured patterns are never used. ``model`` continues a
    pretrained one. Under torchrun pass the ``world``; only its rank 0 emits checkpoints."""
    config = _model_config(payload, model)
    here = World() if world is None else world

    def stages(ctx: RunContext) -> Iterator[Event]:
        trained = yield from pretrain_stage(ctx, here, PROGRESS_UNITS)
        yield _result(ctx, payload.object_init, ctx.probe_numpy(), trained)

    yield from _run(payload, config, model, stages)


def infer(payload: Payload, model: TrainedModel) -> Generator[Event, None, None]:
    """Inference only: the pretrained network's stitched object, no fitting, no refinement."""
    return reconstruct(payload, model, fit_epochs=0, refine_epochs=0)


def network_patches(payload: Payload, model: TrainedModel) -> np.ndarray:
    """Each scan point's patch as the network predicts it (after the overlap constraint).

    For diagnostics (e.g. neighbour phase agreement); runs on the payload's device.
    """
    config = _model_config(payload, model)
    with execution_context(payload.config.execution) as device:
        ctx = RunContext(payload, config, model, device)
        try:
            return anchor_patches(ctx)
        finally:
            ctx.close()


def _run(
    payload: Payload,
    config: PinnConfig,
    model: TrainedModel | None,
    stages: Callable[[RunContext], Iterator[Event]],
) -> Generator[Event, None, None]:
    """Run ``stages`` in a fresh context; whatever happens, free it and restore torch."""
    with execution_context(payload.config.execution) as device:
        ctx = RunContext(payload, config, model, device)
        try:
            yield from stages(ctx)
        except BaseException as exc:
            drop_frame_locals(exc)
            raise
        finally:
            ctx.close()


def _result(
    ctx: RunContext,
    obj: np.ndarray,
    probe: np.ndarray,
    model: TrainedModel | None = None,
    positions: np.ndarray | None = None,
) -> ResultEvent:
    return ResultEvent(
        positions=positions,
        object=obj,
        probe=probe,
        losses=ctx.history(),
        model=ctx.trained_model() if model is None else model,
        progress=ctx.progress,
        seconds=ctx.elapsed(),
        validation_losses=tuple(ctx.validation_losses),
    )


def _report_misfit(payload: Payload, obj: np.ndarray, device: torch.device) -> None:
    """Log how well the network's object explains the counts; warn when it does not (a wrong
    probe is the usual cause: the network uses the scan's probe as given)."""
    misfit = noise_misfit(
        payload.counts,
        payload.good,
        payload.probe_modes,
        payload.positions,
        obj,
        device,
        chirp=payload.chirp,
    )
    if misfit > MISFIT_WARNING:
        logger.warning(
            "the network's object explains the measured patterns poorly: their misfit is %.1f "
            'times what Poisson noise alone leaves (a good fit: 1 to 2). The usual cause is the '
            "scan's probe, which the network uses as given: reconstruct one scan with probe "
            'refinement and infer under its refined probe (docs/pretraining.md), or refine '
            'after inference.',
            misfit,
        )
    else:
        logger.info('data misfit of the network object: %.2f times the Poisson noise', misfit)


def _model_config(payload: Payload, model: TrainedModel | None) -> PinnConfig:
    """The run's config: the payload's, with a loaded model's architecture (checked first)."""
    config = payload.config.pinn
    if model is None:
        return config
    _check_compatible(model, payload)
    _warn_if_another_probe(model, payload)
    return replace(config, model=model.config.model)


def _probe_fingerprints(model: TrainedModel, payload: Payload) -> tuple[str, str]:
    """The probe fingerprint ``model`` was pretrained for ('' if none) and ``payload``'s."""
    recorded = str(model.metadata.get('probe_fingerprint', ''))
    return recorded, probe_fingerprint(payload.physics_probe) if recorded else ''


def _pretrained_for_this_probe(model: TrainedModel, payload: Payload) -> bool:
    """Whether ``model`` was pretrained for ``payload``'s probe (its answer is then a start
    whose low spatial frequencies have converged)."""
    recorded, this = _probe_fingerprints(model, payload)
    return bool(recorded) and recorded == this


def _warn_if_another_probe(model: TrainedModel, payload: Payload) -> None:
    """A pretrained network learned one probe; with another its answer can be poor, which
    the user should hear before trusting it (a warning: a refined probe differs slightly)."""
    recorded, this = _probe_fingerprints(model, payload)
    if recorded and recorded != this:
        logger.warning(
            'this model was pretrained for another probe (fingerprint %s, this scan %s): its '
            'object may be poor; pretrain for this probe (ptychodus-ptychopinn pretrain '
            '--probe DIR) or refine after inference.',
            recorded,
            this,
        )


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
