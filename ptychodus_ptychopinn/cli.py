"""``ptychodus-ptychopinn``: headless reconstruct / infer / train / devices.

The CLI speaks the engine's flat config keys (explicit flag > preset > default, as everywhere)
and reads and writes ptychodus files only through :mod:`.plugin.layout`, so a product written
here is what the GUI reconstructor would yield. Order of work: validate the configuration and
the device, check the input exists and the outputs are writable, then read data and run, so a
typo costs a second, not an hour.

Exit codes: 0 ok, 1 internal error, 2 bad input (the message says what to do), 130 interrupted
(the last complete snapshot is written as the output, atomically, when there is one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .config import (
    DEFAULT_PRESET,
    KEYS,
    PRESETS,
    ExecutionConfig,
    ModelConfig,
    ResolvedConfig,
    TrainConfig,
    resolve_config,
)
from .errors import InputError, PinnError
from .files import check_writable

if TYPE_CHECKING:
    import numpy as np

    from .engine import ResultEvent, TrainedModel
    from .factory import Payload
    from .plugin.layout import ProductWriter

PROG = 'ptychodus-ptychopinn'
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130
ARCHITECTURE_KEYS = ('gridsize', 'width', 'generator', 'amp_max')
"""Keys a loaded model fixes: a model is only usable with the architecture it was built with."""
MODEL_SUFFIX = '.safetensors'

_KEY_TYPES: dict[str, type] = {
    f.name: type(f.default)
    for cls in (ModelConfig, TrainConfig, ExecutionConfig)
    for f in fields(cls)
    if f.name != 'n'
}
_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off')

logger = logging.getLogger('ptychodus_ptychopinn.cli')


# ------------------------------------------------------------------------------- reporting


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf: report them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return '--:--'
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes:02d}:{secs:02d}'


class ProgressBar:
    """A one-line bar on a terminal (no dependency): fraction, stage, loss, elapsed < ETA."""

    def __init__(self, stream: TextIO, goal: int) -> None:
        self.stream = stream
        self.goal = max(goal, 1)
        self.started = time.perf_counter()
        self.last_draw = 0.0
        self.line = ''

    def update(self, done: float, stage: str, loss: float | None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        fraction = min(max(done / self.goal, 0.0), 1.0)
        elapsed = now - self.started
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 0 else None
        loss_text = f' loss {loss:.4g}' if loss is not None and math.isfinite(loss) else ''
        right = (
            f' {100 * fraction:3.0f}% {stage} {done:.1f}/{self.goal}{loss_text} '
            f'{_duration(elapsed)}<{_duration(eta)}'
        )
        width = shutil.get_terminal_size((80, 20)).columns
        bar_width = max(width - len(right) - 3, 10)
        filled = int(round(bar_width * fraction))
        self.line = '[' + '#' * filled + '-' * (bar_width - filled) + ']' + right
        self.stream.write('\r' + self.line[: width - 1] + '\x1b[K')
        self.stream.flush()

    def clear(self) -> None:
        if self.line:
            self.stream.write('\r\x1b[K')
            self.stream.flush()

    def redraw(self) -> None:
        if self.line:
            self.stream.write('\r' + self.line + '\x1b[K')
            self.stream.flush()

    def close(self) -> None:
        if self.line:
            self.stream.write('\n')
            self.stream.flush()
            self.line = ''


class Reporter:
    """Where a run tells the world what it does: JSON lines on stdout (``--events json``),
    a progress bar on a terminal or one line per epoch otherwise (stderr), messages."""

    def __init__(
        self,
        *,
        events_json: bool = False,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.events_json = events_json
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.bar: ProgressBar | None = None
        self.goal = 0
        self.done = 0.0
        self.stage = ''
        self.loss: float | None = None
        self.use_bar = not quiet and _isatty(self.stderr)

    def emit(self, event: str, **values: Any) -> None:
        if self.events_json:
            record = {'event': event, **{k: _clean(v) for k, v in values.items()}}
            self.stdout.write(json.dumps(record) + '\n')
            self.stdout.flush()

    def message(self, text: str, *, always: bool = False) -> None:
        if self.quiet and not always:
            return
        if self.bar is not None:
            self.bar.clear()
        self.stderr.write(text + '\n')
        self.stderr.flush()
        if self.bar is not None:
            self.bar.redraw()

    def start(self, goal: int, **values: Any) -> None:
        self.goal = goal
        self.done = 0.0
        if self.use_bar:
            self.bar = ProgressBar(self.stderr, goal)
        self.emit('start', goal=goal, **values)

    def batch(self, stage: str, batch: int, num_batches: int, loss: float) -> None:
        self.stage = stage
        if math.isfinite(loss):
            self.loss = loss
        if self.bar is not None:
            self.bar.update(self.done + (batch + 1) / max(num_batches, 1), stage, self.loss)

    def epoch(
        self,
        stage: str,
        epoch: int,
        num_epochs: int,
        loss: float,
        seconds: float,
        progress: int,
        **extra: Any,
    ) -> None:
        self.done = float(progress)
        self.loss = loss
        self.emit(
            'epoch',
            stage=stage,
            epoch=epoch + 1,
            num_epochs=num_epochs,
            progress=progress,
            goal=self.goal,
            loss=loss,
            seconds=round(seconds, 4),
            **extra,
        )
        if self.bar is not None:
            self.bar.update(self.done, stage, loss, force=True)
        else:
            more = ''.join(f', {k.replace("_", " ")} {v:.6g}' for k, v in extra.items())
            self.message(
                f'{stage} epoch {epoch + 1}/{num_epochs} [{progress}/{self.goal}]: '
                f'loss {loss:.6g}{more} ({seconds:.2f} s)'
            )

    def snapshot(self, stage: str, progress: int) -> None:
        self.done = float(progress)
        self.emit('snapshot', stage=stage, progress=progress, goal=self.goal)
        if self.bar is not None:
            self.bar.update(self.done, stage, self.loss, force=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _ReporterHandler(logging.Handler):
    """Log records go through the reporter so they do not tear the progress bar."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter
        self.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.message(self.format(record), always=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


# ------------------------------------------------------------------------------ arguments


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text} is negative')
    return value


def _parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set key=value`` items -> typed overrides (types from the config dataclasses)."""
    values: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition('=')
        key = key.strip().replace('-', '_')
        if not sep:
            raise InputError(f'--set {item!r}: expected KEY=VALUE, e.g. --set width=8.')
        if key not in _KEY_TYPES:
            raise InputError(f'--set {item!r}: unknown key {key!r}; keys: {", ".join(KEYS)}.')
        kind = _KEY_TYPES[key]
        text = text.strip()
        try:
            if kind is bool:
                word = text.casefold()
                if word not in _TRUE + _FALSE:
                    raise ValueError(text)
                values[key] = word in _TRUE
            elif kind is int:
                values[key] = int(text)
            elif kind is float:
                values[key] = float(text)
            else:
                values[key] = text
        except ValueError as exc:
            raise InputError(
                f'--set {item!r}: {key} takes a{"n" if kind is int else ""} {kind.__name__} value.'
            ) from exc
    return values


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Explicit values: ``--set`` items, then dedicated flags (which win)."""
    values = _parse_set(getattr(args, 'set', None))
    for key in KEYS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    return values


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('messages')
    group.add_argument(
        '--events',
        choices=('json',),
        default=None,
        help='write one JSON object per line on stdout for each event (start, epoch, '
        'snapshot, result, interrupted, error) with fields such as event, stage, epoch, '
        'progress, goal, loss and seconds',
    )
    group.add_argument(
        '-q',
        '--quiet',
        action='store_true',
        help='no progress bar and no per-epoch lines on stderr (errors are still shown)',
    )
    group.add_argument(
        '-v', '--verbose', action='store_true', help='also show informational log messages'
    )
    group.add_argument(
        '--debug', action='store_true', help='show the traceback of an internal error'
    )


def _execution(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('execution (how fast, never what a model is)')
    group.add_argument(
        '--device',
        metavar='DEV',
        help="'auto' (default: first CUDA GPU, else MPS, else CPU), 'cpu', 'cuda', 'cuda:N' "
        "or 'mps'; a device that is not there is an error (see the devices command)",
    )
    group.add_argument(
        '--num-threads', type=int, metavar='N', help='CPU threads for torch (0: torch decides)'
    )
    group.add_argument(
        '--batch-size', type=int, metavar='N', help='scan-point groups per optimiser step'
    )
    group.add_argument(
        '--inference-batch-size',
        type=int,
        metavar='N',
        help='groups per batch when inferring and stitching',
    )
    group.add_argument('--seed', type=int, metavar='N', help='random seed (default 0)')
    group.add_argument(
        '--deterministic',
        action='store_true',
        default=None,
        help='use deterministic algorithms only (same seed, same result; can be slower)',
    )
    group.add_argument(
        '--precision', choices=('float32', 'float64'), help='floating-point precision'
    )


def _config_group(parser: argparse.ArgumentParser, *, refine: bool) -> argparse._ArgumentGroup:
    group = parser.add_argument_group('configuration (explicit values beat the preset)')
    group.add_argument(
        '--preset',
        metavar='NAME',
        help=f'one of {", ".join(PRESETS)} (default {DEFAULT_PRESET})',
    )
    group.add_argument('--epochs', type=_positive_int, metavar='N', help='network-fit epochs')
    if refine:
        group.add_argument(
            '--refine-epochs',
            type=_positive_int,
            metavar='N',
            help='epochs of direct object (and probe) refinement after the network',
        )
    group.add_argument('--learning-rate', type=float, metavar='LR', help='network learning rate')
    group.add_argument(
        '--gridsize',
        type=int,
        metavar='G',
        help='overlap constraint: groups of G*G neighbouring patterns (1 disables it)',
    )
    group.add_argument(
        '--set',
        action='append',
        metavar='KEY=VALUE',
        help='any other config key, repeatable (dedicated flags win); keys: ' + ', '.join(KEYS),
    )
    return group


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='PtychoPINN reconstructions of ptychodus data, without the GUI. Input '
        "directories use ptychodus's standard layout (diffraction.h5 + product.h5, as "
        '`ptychodus -b` reads them); outputs are ptychodus product files.',
        epilog='Exit codes: 0 ok, 1 internal error, 2 bad input, 130 interrupted.',
    )
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    rec = commands.add_parser(
        'reconstruct',
        help='fit the network to a scan (self-supervised), then refine; write a product',
        description='Fit the PINN to this scan without ground truth (warm-started from '
        "--model if given), stitch the object on the input product's grid, optionally refine "
        'it directly, and write a ptychodus product file plus a PNG preview. Ctrl-C stops the '
        'run and writes the last complete snapshot.',
    )
    _io(rec, model_required=False)
    group = _config_group(rec, refine=True)
    group.add_argument(
        '--probe-refinement',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='refine the probe too (default: from the preset)',
    )
    _execution(rec)
    _common(rec)
    rec.set_defaults(handler=cmd_reconstruct)

    inf = commands.add_parser(
        'infer',
        help='reconstruct a scan with a trained model (fast); write a product',
        description='Run a trained model over the scan and stitch its object on the input '
        "product's grid (no fitting unless --fine-tune-epochs is given); write a ptychodus "
        'product file plus a PNG preview.',
    )
    _io(inf, model_required=True)
    group = inf.add_argument_group('fine-tuning (default: none, pure inference)')
    group.add_argument(
        '--fine-tune-epochs',
        type=_positive_int,
        default=0,
        metavar='N',
        help='network epochs on this scan before inferring (default 0)',
    )
    group.add_argument(
        '--refine-epochs',
        dest='infer_refine_epochs',
        type=_positive_int,
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
    _execution(inf)
    _common(inf)
    inf.set_defaults(handler=cmd_infer)

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
    _config_group(trn, refine=False)
    _execution(trn)
    _common(trn)
    trn.set_defaults(handler=cmd_train)

    dev = commands.add_parser(
        'devices',
        help='list the devices torch sees and what auto would choose',
        description='Print what --device auto would choose and every device torch sees.',
    )
    dev.add_argument('--json', action='store_true', help='print one JSON object instead')
    dev.set_defaults(handler=cmd_devices)
    return parser


def _io(parser: argparse.ArgumentParser, *, model_required: bool) -> None:
    group = parser.add_argument_group('files')
    group.add_argument(
        '--input',
        required=True,
        metavar='DIR',
        help='ptychodus layout directory holding diffraction.h5 and product.h5',
    )
    group.add_argument(
        '--output', required=True, metavar='FILE.h5', help='ptychodus product file to write'
    )
    group.add_argument(
        '--model',
        required=model_required,
        metavar='FILE',
        help='trained model file'
        + (' to infer with' if model_required else ' to warm-start the network from'),
    )
    group.add_argument(
        '--save-model', metavar='FILE', help=f'also save the resulting model (*{MODEL_SUFFIX})'
    )
    group.add_argument(
        '--preview',
        metavar='FILE.png',
        help='PNG preview of amplitude, phase, probe and losses (default: the output with .png)',
    )
    group.add_argument('--no-preview', action='store_true', help='do not write a preview')


# ---------------------------------------------------------------------------- preparation


def _validate(args: argparse.Namespace, overrides: Mapping[str, Any]) -> ResolvedConfig:
    """Config and device, checked before any file is read."""
    if overrides.get('deterministic'):
        # cuBLAS needs this before CUDA starts for deterministic matrix products
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    config = resolve_config(getattr(args, 'preset', None), overrides)
    from .device import resolve_device

    resolve_device(config.execution.device)
    return config


def _device_label(name: str) -> str:
    """``cuda:0`` or ``auto (cuda:0)``: say what ``auto`` chose."""
    from .device import resolve_device

    resolved = str(resolve_device(name))
    return resolved if resolved == name else f'{name} ({resolved})'


def _load_model(path: str) -> TrainedModel:
    from .checkpoint import load_model

    return load_model(path)


def _apply_architecture(
    model: TrainedModel, overrides: dict[str, Any], explicit: Mapping[str, Any]
) -> None:
    """A model fixes its architecture; asking for a different one is an error, not ignored."""
    config = model.config.model
    for key in ARCHITECTURE_KEYS:
        value = getattr(config, key)
        if key in explicit and explicit[key] != value:
            raise InputError(
                f'the model was built with {key}={value!r} but {key}={explicit[key]!r} was '
                f'asked for; drop that option to use the model, or reconstruct without --model.'
            )
        overrides[key] = value


def _preview_path(args: argparse.Namespace, output: Path) -> Path | None:
    if args.no_preview:
        return None
    return Path(args.preview) if args.preview else output.with_suffix('.png')


@dataclass
class _Latest:
    """The last complete object/probe/loss history: what an interrupted run writes."""

    object: np.ndarray
    probe: np.ndarray
    losses: tuple[tuple[int, float], ...]
    progress: int
    stage: str


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


# ------------------------------------------------------------------------------- commands


def cmd_devices(args: argparse.Namespace, reporter: Reporter) -> int:
    from .device import auto_device, available_devices, describe_device

    auto = auto_device()
    devices = [{'name': d, 'description': describe_device(d)} for d in available_devices()]
    if args.json:
        reporter.stdout.write(json.dumps({'auto': auto, 'devices': devices}) + '\n')
    else:
        reporter.stdout.write(f'auto -> {auto}\n')
        for device in devices:
            reporter.stdout.write(f'  {device["description"]}\n')
    reporter.stdout.flush()
    return EXIT_OK


def cmd_reconstruct(args: argparse.Namespace, reporter: Reporter) -> int:
    return _reconstruct_like(args, reporter, 'reconstruct')


def cmd_infer(args: argparse.Namespace, reporter: Reporter) -> int:
    return _reconstruct_like(args, reporter, 'infer')


def _reconstruct_like(args: argparse.Namespace, reporter: Reporter, command: str) -> int:
    explicit = _overrides(args)
    overrides = dict(explicit)
    config = _validate(args, overrides)
    from .plugin.layout import check_layout

    check_layout(args.input)
    output = check_writable(Path(args.output), 'output')
    preview = _preview_path(args, output)
    if preview is not None:
        check_writable(preview, 'preview')
        from .preview import INSTALL_HINT, preview_available

        if not preview_available():
            reporter.message(
                f'warning: matplotlib is not installed, so no preview will be written; '
                f'{INSTALL_HINT}, or pass --no-preview.',
                always=True,
            )
            preview = None
    save_model = check_writable(Path(args.save_model), 'model file') if args.save_model else None

    model = _load_model(args.model) if args.model else None
    if model is not None:
        _apply_architecture(model, overrides, explicit)

    from .plugin.layout import ProductWriter, load_layout

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
    from . import engine

    payload = job.payload
    train = payload.config.pinn.train
    goal = engine.progress_goal(
        payload.config.pinn, fit_epochs=job.fit_epochs, refine_epochs=job.refine_epochs
    )
    refine_probe = train.probe_refinement and job.fit_epochs + job.refine_epochs > 0
    device = _device_label(payload.config.execution.device)
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
                reporter.snapshot(event.stage, event.progress)
            elif isinstance(event, engine.ResultEvent):
                result = event
                latest = _Latest(event.object, event.probe, event.losses, event.progress, 'done')
        events.close()
        reporter.finish()
        assert result is not None and latest is not None
        _write(job, latest, refine_probe, goal, interrupted=False)
        if job.save_model is not None:
            from .checkpoint import save_model

            save_model(result.model, job.save_model)
        last_loss = result.losses[-1][1] if result.losses else None
        reporter.emit(
            'result',
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


def _write(job: _Job, latest: _Latest, refine_probe: bool, goal: int, interrupted: bool) -> None:
    payload = job.payload
    probe = latest.probe if refine_probe else None
    state = 'interrupted; last complete snapshot' if interrupted else 'finished'
    note = (
        f'ptychodus-ptychopinn {__version__} {job.command}: preset {payload.config.preset}, '
        f'progress {latest.progress}/{goal} ({state}) on '
        f'{_device_label(payload.config.execution.device)}'
    )
    job.writer.write(job.output, latest.object, probe, latest.losses, note)
    if job.preview is not None:
        from .preview import PreviewUnavailable, save_preview, scan_crop

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


def cmd_train(args: argparse.Namespace, reporter: Reporter) -> int:
    explicit = _overrides(args)
    overrides = dict(explicit)
    _validate(args, overrides)
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
    model = _load_model(args.model) if args.model else None
    if model is not None:
        _apply_architecture(model, overrides, explicit)

    from . import engine
    from .checkpoint import save_model
    from .plugin.layout import training_arrays

    source, arrays = training_arrays(args.input)
    payload = arrays.payload(preset=getattr(args, 'preset', None), overrides=overrides)
    epochs = payload.config.pinn.train.epochs
    device = _device_label(payload.config.execution.device)
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


# ----------------------------------------------------------------------------------- main


def _setup_logging(reporter: Reporter, verbose: bool) -> Callable[[], None]:
    root = logging.getLogger()
    handler = _ReporterHandler(reporter)
    level_before = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(level_before)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    reporter = Reporter(
        events_json=getattr(args, 'events', None) == 'json',
        quiet=getattr(args, 'quiet', False),
    )
    restore = _setup_logging(reporter, getattr(args, 'verbose', False))
    try:
        return int(args.handler(args, reporter))
    except KeyboardInterrupt:
        reporter.finish()
        reporter.emit('interrupted', progress=None, output=None)
        reporter.message('interrupted; nothing was written.', always=True)
        return EXIT_INTERRUPTED
    except (PinnError, FloatingPointError) as exc:
        reporter.finish()
        reporter.emit('error', exit_code=EXIT_INPUT, message=str(exc))
        reporter.message(f'{PROG} {args.command}: error: {exc}', always=True)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - the last line of defence, reported as such
        reporter.finish()
        reporter.emit('error', exit_code=EXIT_INTERNAL, message=f'{type(exc).__name__}: {exc}')
        if getattr(args, 'debug', False):
            import traceback

            traceback.print_exc(file=reporter.stderr)
        reporter.message(
            f'{PROG} {args.command}: internal error: {type(exc).__name__}: {exc}'
            + ('' if getattr(args, 'debug', False) else ' (rerun with --debug for details)'),
            always=True,
        )
        return EXIT_INTERNAL
    finally:
        restore()


if __name__ == '__main__':
    sys.exit(main())
