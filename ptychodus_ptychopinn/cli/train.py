"""``train``: fit the network to a scan or exported training data and save the model file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..files import check_writable
from .options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    MODEL_SUFFIX,
    add_config_options,
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
    from ..engine import ResultEvent


def add_parser(commands: Any) -> None:
    """Register ``train`` on the subcommand action ``commands``."""
    trn = commands.add_parser(
        'train',
        help='train a model on exported training data or a layout directory',
        description='Train the network on a scan (self-supervised) holding out a share of '
        'scan points for a validation loss, and save the model file. Input: a training-data '
        'file exported by ptychodus (Export Training Data on pinn_pretrained), a directory '
        'holding one, or a layout directory (diffraction.h5 + product.h5).',
    )
    trn.add_argument(
        '--input', required=True, metavar='PATH', help='training data file or directory'
    )
    trn.add_argument(
        '--output',
        required=True,
        metavar='MODEL_FILE',
        help=f'model file to write (ptychodus loads *{MODEL_SUFFIX})',
    )
    trn.add_argument(
        '--model', metavar='FILE', help='continue training this model instead of a fresh one'
    )
    trn.add_argument(
        '--validation-fraction',
        type=float,
        default=0.1,
        metavar='F',
        help='share of scan points held out for the validation loss, in [0, 1) (default 0.1)',
    )
    add_config_options(trn, refine=False)
    add_execution_options(trn)
    add_message_options(trn)
    trn.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace, reporter: Reporter) -> int:
    explicit = overrides_from(args)
    overrides = dict(explicit)
    validate(args, overrides)
    fraction = args.validation_fraction
    if not 0.0 <= fraction < 1.0:
        raise InputError(f'--validation-fraction {fraction} must be in [0, 1), e.g. 0.1.')
    if not Path(args.input).exists():
        raise InputError(
            f'the training input {args.input} does not exist; pass a training-data file '
            'exported by ptychodus, a directory holding one, or a layout directory.'
        )
    output = check_writable(Path(args.output), 'model file')
    if output.suffix != MODEL_SUFFIX:
        reporter.message(
            f'note: ptychodus lists model files ending in {MODEL_SUFFIX}; writing {output}.'
        )
    model = load_model(args.model) if args.model else None
    if model is not None:
        apply_architecture(model, overrides, explicit)

    from .. import engine
    from ..checkpoint import save_model
    from ..plugin.layout import training_arrays

    source, arrays = training_arrays(args.input)
    payload = arrays.payload(preset=getattr(args, 'preset', None), overrides=overrides)
    epochs = payload.config.pinn.train.epochs
    device = device_label(payload.config.execution.device)
    reporter.start(
        epochs,
        command='train',
        preset=payload.config.preset,
        device=device,
        patterns=payload.num_patterns,
        n=payload.n,
        epochs=epochs,
        validation_fraction=fraction,
    )
    reporter.message(
        f'train: {payload.num_patterns} patterns of {payload.n} x {payload.n} from {source}, '
        f'{epochs} epochs, {100 * fraction:.0f}% held out, on {device}'
    )
    events = engine.train(payload, model, validation_fraction=fraction)
    result: ResultEvent | None = None
    pending: Any = None
    try:
        for event in events:
            if isinstance(event, engine.BatchEvent):
                reporter.batch(event.stage, event.batch, event.num_batches, event.loss)
            elif isinstance(event, engine.EpochEvent):
                pending = event
                reporter.epoch(
                    event.stage,
                    event.epoch,
                    event.num_epochs,
                    event.loss,
                    event.seconds,
                    event.progress,
                )
            elif isinstance(event, engine.StageEndEvent):
                reporter.stage_end(event)
            elif isinstance(event, engine.ResultEvent):
                result = event
        events.close()
        reporter.finish()
        assert result is not None
        save_model(result.model, output)
        validation = result.validation_losses[-1][1] if result.validation_losses else None
        reporter.emit(
            'result',
            progress=result.progress,
            goal=epochs,
            loss=result.losses[-1][1] if result.losses else None,
            validation_loss=validation,
            validation_losses=[v for _, v in result.validation_losses],
            losses=[v for _, v in result.losses],
            seconds=round(result.seconds, 3),
            output=str(output),
        )
        text = '' if validation is None else f', validation loss {validation:.6g}'
        reporter.message(f'done in {result.seconds:.1f} s{text}; wrote {output}')
        return EXIT_OK
    except KeyboardInterrupt:
        events.close()
        reporter.finish()
        progress = None if pending is None else pending.progress
        reporter.emit('interrupted', progress=progress, goal=epochs, output=None)
        reporter.message('interrupted; training did not finish, no model was saved.', always=True)
        return EXIT_INTERRUPTED
    finally:
        events.close()
