"""``reconstruct`` and ``infer``: run the engine on a layout directory, write a product.

A product written here is what the GUI reconstructor would yield (files go through
:mod:`..plugin.layout`). Ctrl-C writes the last complete snapshot, atomically, when there is one.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config import DEFAULT_PRESET, PRESETS
from ..files import check_writable
from .options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_config_options,
    add_execution_options,
    add_io_options,
    add_message_options,
    apply_architecture,
    device_label,
    load_model,
    overrides_from,
    positive_int,
    preview_path,
    validate,
)
from .reporting import Reporter

if TYPE_CHECKING:
    import numpy as np

    from ..engine import ResultEvent, TrainedModel
    from ..factory import Payload
    from ..plugin.layout import ProductWriter

logger = logging.getLogger('ptychodus_ptychopinn.cli')


def add_parsers(commands: Any) -> None:
    """Register ``reconstruct`` and ``infer`` on the subcommand action ``commands``."""
    rec = commands.add_parser(
        'reconstruct',
        help='fit the network to a scan (self-supervised), then refine; write a product',
        description='Fit the PINN to this scan without ground truth (warm-started from '
        "--model if given), stitch the object on the input product's grid, optionally refine "
        'it directly, and write a ptychodus product file plus a PNG preview. Ctrl-C stops the '
        'run and writes the last complete snapshot.',
    )
    add_io_options(rec, model_required=False)
    group = add_config_options(rec, refine=True)
    group.add_argument(
        '--probe-refinement',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='refine the probe too (default: from the preset)',
    )
    add_execution_options(rec)
    add_message_options(rec)
    rec.set_defaults(handler=cmd_reconstruct)

    inf = commands.add_parser(
        'infer',
        help='reconstruct a scan with a trained model (fast); write a product',
        description='Run a trained model over the scan and stitch its object on the input '
        "product's grid (no fitting unless --fine-tune-epochs is given); write a ptychodus "
        'product file plus a PNG preview.',
    )
    add_io_options(inf, model_required=True)
    group = inf.add_argument_group('fine-tuning (default: none, pure inference)')
    group.add_argument(
        '--fine-tune-epochs',
        type=positive_int,
        default=0,
        metavar='N',
        help='network epochs on this scan before inferring (default 0)',
    )
    group.add_argument(
        '--refine-epochs',
        dest='infer_refine_epochs',
        type=positive_int,
        default=0,
        metavar='N',
        help='epochs of direct object refinement after inference (default 0)',
    )
    group.add_argument(
        '--preset',
        metavar='NAME',
        help=f'learning rates for fine-tuning: one of {", ".join(PRESETS)} '
        f'(default {DEFAULT_PRESET})',
    )
    group.add_argument('--learning-rate', type=float, metavar='LR', help='fine-tuning rate')
    group.add_argument(
        '--set', action='append', metavar='KEY=VALUE', help='any other config key, repeatable'
    )
    add_execution_options(inf)
    add_message_options(inf)
    inf.set_defaults(handler=cmd_infer)


@dataclass
class _Latest:
    """The last complete object/probe/loss history: what an interrupted run writes."""

    object: np.ndarray
    probe: np.ndarray
    losses: tuple[tuple[int, float], ...]
    progress: int
    stage: str
    positions: np.ndarray | None = None
    """Refined scan positions (object pixels), once the run has finished."""


@dataclass
class _Job:
    """Everything a reconstruct/infer run needs once the inputs are read."""

    args: argparse.Namespace
    command: str
    output: Path
    preview: Path | None
    save_model: Path | None
    payload: Payload
    writer: ProductWriter
    model: TrainedModel | None
    fit_epochs: int
    refine_epochs: int


def cmd_reconstruct(args: argparse.Namespace, reporter: Reporter) -> int:
    return _reconstruct_like(args, reporter, 'reconstruct')


def cmd_infer(args: argparse.Namespace, reporter: Reporter) -> int:
    return _reconstruct_like(args, reporter, 'infer')


def _reconstruct_like(args: argparse.Namespace, reporter: Reporter, command: str) -> int:
    explicit = overrides_from(args)
    overrides = dict(explicit)
    config = validate(args, overrides)
    from ..plugin.layout import check_layout

    check_layout(args.input)
    output = check_writable(Path(args.output), 'output')
    preview = preview_path(args, output)
    if preview is not None:
        check_writable(preview, 'preview')
        from ..preview import INSTALL_HINT, preview_available

        if not preview_available():
            reporter.message(
                f'warning: matplotlib is not installed, so no preview will be written; '
                f'{INSTALL_HINT}, or pass --no-preview.',
                always=True,
            )
            preview = None
    save_model = check_writable(Path(args.save_model), 'model file') if args.save_model else None

    model = load_model(args.model) if args.model else None
    if model is not None:
        apply_architecture(model, overrides, explicit)

    from ..plugin.layout import ProductWriter, load_layout

    scan = load_layout(args.input)
    payload = scan.arrays.payload(preset=config.preset, overrides=overrides)
    if command == 'infer':
        fit_epochs, refine_epochs = args.fine_tune_epochs, args.infer_refine_epochs
    else:
        fit_epochs = payload.config.pinn.train.epochs
        refine_epochs = payload.config.pinn.train.refine_epochs
    job = _Job(
        args=args,
        command=command,
        output=output,
        preview=preview,
        save_model=save_model,
        payload=payload,
        writer=ProductWriter(scan.parameters, payload, fit_epochs),
        model=model,
        fit_epochs=fit_epochs,
        refine_epochs=refine_epochs,
    )
    return _drive(job, reporter)


def _drive(job: _Job, reporter: Reporter) -> int:
    """Run the engine, report events, write the result, or the last snapshot on Ctrl-C."""
    from .. import engine

    payload = job.payload
    train = payload.config.pinn.train
    goal = engine.progress_goal(
        payload.config.pinn, fit_epochs=job.fit_epochs, refine_epochs=job.refine_epochs
    )
    refine_probe = train.probe_refinement and job.refine_epochs > 0
    device = device_label(payload.config.execution.device)
    reporter.start(
        goal,
        command=job.command,
        preset=payload.config.preset,
        device=device,
        patterns=payload.num_patterns,
        n=payload.n,
        fit_epochs=job.fit_epochs,
        refine_epochs=job.refine_epochs,
    )
    reporter.message(
        f'{job.command}: {payload.num_patterns} patterns of {payload.n} x {payload.n}, preset '
        f'{payload.config.preset}, {job.fit_epochs} fit + {job.refine_epochs} refine epochs on '
        f'{device}' + (f', model {job.args.model}' if job.model is not None else '')
    )
    events = engine.reconstruct(
        payload, job.model, fit_epochs=job.fit_epochs, refine_epochs=job.refine_epochs
    )
    latest: _Latest | None = None
    result: ResultEvent | None = None
    try:
        for event in events:
            if isinstance(event, engine.BatchEvent):
                reporter.batch(event.stage, event.batch, event.num_batches, event.loss)
            elif isinstance(event, engine.EpochEvent):
                reporter.epoch(
                    event.stage,
                    event.epoch,
                    event.num_epochs,
                    event.loss,
                    event.seconds,
                    event.progress,
                    excess_loss=job.writer.loss_value(event.progress, event.loss),
                )
            elif isinstance(event, engine.SnapshotEvent):
                latest = _Latest(
                    event.object, event.probe, event.losses, event.progress, event.stage
                )
                reporter.snapshot(
                    event.stage,
                    event.progress,
                    object=event.object,
                    probe=event.probe,
                    losses=job.writer.losses(event.losses),
                )
            elif isinstance(event, engine.StageEndEvent):
                reporter.stage_end(event)
            elif isinstance(event, engine.ResultEvent):
                result = event
                latest = _Latest(
                    event.object,
                    event.probe,
                    event.losses,
                    event.progress,
                    'done',
                    event.positions,
                )
        events.close()
        reporter.finish()
        assert result is not None and latest is not None
        _write(job, latest, refine_probe, goal, interrupted=False)
        if job.save_model is not None:
            from ..checkpoint import save_model

            save_model(result.model, job.save_model)
        last_loss = result.losses[-1][1] if result.losses else None
        moved = _position_correction(result.positions, payload.positions)
        if moved is not None:
            reporter.message(
                f'position refinement moved {payload.num_patterns} scan points by '
                f'{moved["rms"]:.3f} px RMS, {moved["max"]:.3f} px at most (written to the output)'
            )
        reporter.emit(
            'result',
            **({} if moved is None else {'position_correction_px': moved}),
            progress=result.progress,
            goal=goal,
            loss=last_loss,
            seconds=round(result.seconds, 3),
            output=str(job.output),
            preview=None if job.preview is None else str(job.preview),
            model=None if job.save_model is None else str(job.save_model),
        )
        wrote = [str(job.output)] + [str(p) for p in (job.preview, job.save_model) if p]
        reporter.message(f'done in {result.seconds:.1f} s; wrote {", ".join(wrote)}')
        return EXIT_OK
    except KeyboardInterrupt:
        events.close()
        reporter.finish()
        return _interrupted(job, reporter, latest, refine_probe, goal)
    finally:
        events.close()


def _position_correction(refined: np.ndarray | None, given: np.ndarray) -> dict[str, float] | None:
    """RMS and largest move of the scan points (object pixels), None when not refined."""
    if refined is None:
        return None
    import numpy as np  # the CLI imports numpy only where a command needs it

    moved = np.linalg.norm(refined - given, axis=1)
    return {'rms': round(float(np.sqrt(np.mean(moved**2))), 4), 'max': round(float(moved.max()), 4)}


def _write(job: _Job, latest: _Latest, refine_probe: bool, goal: int, interrupted: bool) -> None:
    payload = job.payload
    probe = latest.probe if refine_probe else None
    state = 'interrupted; last complete snapshot' if interrupted else 'finished'
    note = (
        f'ptychodus-ptychopinn {__version__} {job.command}: preset {payload.config.preset}, '
        f'progress {latest.progress}/{goal} ({state}) on '
        f'{device_label(payload.config.execution.device)}'
    )
    job.writer.write(job.output, latest.object, probe, latest.losses, note, latest.positions)
    if job.preview is not None:
        from ..preview import PreviewUnavailable, save_preview, scan_crop

        shape = payload.object_init.shape
        try:
            save_preview(
                job.preview,
                latest.object,
                payload.probe_modes if probe is None else probe,
                job.writer.losses(latest.losses),
                crop=scan_crop(payload.positions, payload.n, (shape[0], shape[1])),
                title=f'{job.output.name}: {job.command}, preset {payload.config.preset}, '
                f'{latest.progress}/{goal}' + (' (interrupted)' if interrupted else ''),
                stage_boundary=job.fit_epochs + 1 if job.fit_epochs and job.refine_epochs else None,
            )
        except PreviewUnavailable as exc:
            logger.warning('%s', exc)


def _interrupted(
    job: _Job, reporter: Reporter, latest: _Latest | None, refine_probe: bool, goal: int
) -> int:
    written: str | None = None
    if latest is not None:
        try:
            _write(job, latest, refine_probe, goal, interrupted=True)
            written = str(job.output)
        except KeyboardInterrupt:
            reporter.message('interrupted again while writing; nothing was written.', always=True)
    reporter.emit(
        'interrupted',
        progress=None if latest is None else latest.progress,
        goal=goal,
        output=written,
    )
    if written is not None:
        assert latest is not None
        reporter.message(
            f'interrupted; wrote the last complete snapshot (progress {latest.progress}/{goal}) '
            f'to {written}' + ('' if job.save_model is None else '; no model was saved'),
            always=True,
        )
    elif latest is None:
        reporter.message('interrupted before the first snapshot; nothing was written.', always=True)
    return EXIT_INTERRUPTED
