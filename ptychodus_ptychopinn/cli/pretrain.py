"""``pretrain``: train a model for a scan's probe on procedural objects, never on its patterns.

Runs alone or under ``torchrun`` (one process per rank, DistributedDataParallel; only rank 0
writes the model, events and messages). Checkpoints are written atomically every
``pretrain_checkpoint_every`` seconds, so Ctrl-C (or a lost node) keeps the last one.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import PRETRAIN_GENERATOR
from ..files import check_writable
from .options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    MODEL_SUFFIX,
    add_execution_options,
    add_message_options,
    apply_architecture,
    device_label,
    load_model,
    overrides_from,
    validate,
)
from .reporting import Reporter

if TYPE_CHECKING:
    from ..engine import TrainedModel


def add_parser(commands: Any) -> None:
    """Register ``pretrain`` on the subcommand action ``commands``."""
    pre = commands.add_parser(
        'pretrain',
        help="pretrain a model for a scan's probe on simulated objects",
        description='Pretrain the network for the probe, detector mask, dose and scan shape of '
        'a ptychodus layout directory, on procedurally generated objects simulated on the fly '
        "(Poisson noise at the scan's dose). The measured patterns and the object are never "
        'used for training. Stops at --minutes or --patterns, whichever comes first. Under '
        'torchrun (torchrun --standalone --nproc-per-node=K -m ptychodus_ptychopinn pretrain '
        '...) every rank simulates its own objects and rank 0 writes the model.',
    )
    pre.add_argument(
        '--probe',
        required=True,
        metavar='DIR',
        help='layout directory (diffraction.h5 + product.h5) whose probe, geometry, mask, '
        'dose and scan shape to pretrain for',
    )
    pre.add_argument(
        '--output', required=True, metavar='MODEL_FILE', help=f'model file (*{MODEL_SUFFIX})'
    )
    pre.add_argument(
        '--minutes',
        type=float,
        metavar='M',
        help='time budget in minutes (default 10; 0: no time limit, then --patterns is needed)',
    )
    pre.add_argument(
        '--patterns',
        type=int,
        metavar='K',
        help='pattern budget: stop after K simulated patterns over all ranks (default: none)',
    )
    pre.add_argument('--model', metavar='FILE', help='continue pretraining this model')
    pre.add_argument('--preset', metavar='NAME', help='preset for the architecture (width)')
    pre.add_argument(
        '--set',
        action='append',
        metavar='KEY=VALUE',
        help='any config key, e.g. pretrain_families=dead_leaves,blobs or layers=8',
    )
    add_execution_options(pre)
    add_message_options(pre)
    pre.set_defaults(handler=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..distributed import process_group, rank_device, threads_per_rank, world_from_env

    world = world_from_env()
    explicit = overrides_from(args)
    overrides = dict(explicit)
    overrides.setdefault('generator', PRETRAIN_GENERATOR)
    if args.minutes is not None:
        overrides['pretrain_minutes'] = args.minutes
    if args.patterns is not None:
        overrides['pretrain_patterns'] = args.patterns
    overrides['device'] = rank_device(overrides.get('device') or 'auto', world)
    if world.distributed and not overrides.get('num_threads'):
        overrides['num_threads'] = threads_per_rank(world)
    if world.distributed:
        # Each rank simulates its own objects; the seed offset is applied by the stage.
        reporter.events_json = reporter.events_json and world.is_main
        reporter.quiet = reporter.quiet or not world.is_main
        reporter.use_bar = reporter.use_bar and world.is_main
    validate(args, overrides)
    from ..plugin.layout import check_layout

    check_layout(args.probe)
    output = Path(args.output)
    if world.is_main:
        check_writable(output, 'model file')
        if output.suffix != MODEL_SUFFIX:
            reporter.message(f'note: ptychodus lists model files ending in {MODEL_SUFFIX}.')
    model = load_model(args.model) if args.model else None
    if model is not None:
        apply_architecture(model, overrides, explicit)

    from .. import engine
    from ..checkpoint import save_model
    from ..plugin.layout import load_layout

    scan = load_layout(args.probe)
    payload = scan.arrays.payload(preset=args.preset, overrides=overrides)
    config = payload.config.pinn
    device = device_label(payload.config.execution.device)
    budget = _budget_text(config.pretrain.pretrain_minutes, config.pretrain.pretrain_patterns)
    reporter.start(
        engine.PRETRAIN_PROGRESS_UNITS,
        command='pretrain',
        device=device,
        n=payload.n,
        gridsize=config.model.gridsize,
        generator=config.model.generator,
        world_size=world.size,
        dose=payload.mean_total_counts,
        **dataclasses.asdict(config.pretrain),
    )
    reporter.message(
        f'pretrain: probe of {args.probe} ({payload.n} x {payload.n}, '
        f'{payload.probe_modes.shape[0]} mode(s)), dose {payload.mean_total_counts:.3g} counts '
        f'per pattern, objects {config.pretrain.pretrain_families}; {budget} on {device}'
        + (f' x {world.size} ranks' if world.distributed else '')
    )
    written: TrainedModel | None = None
    with process_group(world, payload_device(payload)):
        events = engine.pretrain(payload, model, world=world)
        try:
            for event in events:
                if isinstance(event, engine.BatchEvent):
                    reporter.batch(event.stage, event.batch, event.num_batches, event.loss)
                elif isinstance(event, engine.EpochEvent):
                    extra = {}
                    if event.validation_loss is not None:
                        extra['validation_loss'] = event.validation_loss
                    reporter.epoch(
                        event.stage,
                        event.epoch,
                        event.num_epochs,
                        event.loss,
                        event.seconds,
                        event.progress,
                        **extra,
                    )
                elif isinstance(event, engine.CheckpointEvent):
                    save_model(event.model, output)
                    written = event.model
                    reporter.emit('checkpoint', progress=event.progress, output=str(output))
                elif isinstance(event, engine.StageEndEvent):
                    reporter.stage_end(event)
                elif isinstance(event, engine.ResultEvent) and world.is_main:
                    save_model(event.model, output)
                    written = event.model
                    _report_result(reporter, event, output)
        except KeyboardInterrupt:
            events.close()
            reporter.finish()
            kept = f'kept the last checkpoint in {output}' if written else 'no checkpoint yet'
            reporter.emit('interrupted', output=str(output) if written else None)
            reporter.message(f'interrupted; {kept}.', always=True)
            return EXIT_INTERRUPTED
        finally:
            events.close()
    reporter.finish()
    return EXIT_OK


def payload_device(payload: Any) -> Any:
    from ..device import resolve_device

    return resolve_device(payload.config.execution.device)


def _budget_text(minutes: float, patterns: int) -> str:
    parts = []
    if minutes > 0:
        parts.append(f'{minutes:g} min')
    if patterns > 0:
        parts.append(f'{patterns} patterns')
    return ' or '.join(parts)


def _report_result(reporter: Reporter, event: Any, output: Path) -> None:
    meta = event.model.metadata
    reporter.finish()
    reporter.emit(
        'result',
        progress=event.progress,
        loss=event.losses[-1][1] if event.losses else None,
        validation_loss=event.validation_losses[-1][1] if event.validation_losses else None,
        losses=[v for _, v in event.losses],
        validation_losses=[v for _, v in event.validation_losses],
        seconds=round(event.seconds, 3),
        patterns=int(meta.get('pretrain_patterns', '0')),
        output=str(output),
    )
    validation = event.validation_losses[-1][1] if event.validation_losses else float('nan')
    reporter.message(
        f'done in {event.seconds:.1f} s, {meta.get("pretrain_patterns")} patterns, '
        f'validation loss {validation:.4g}; wrote {output}'
    )
