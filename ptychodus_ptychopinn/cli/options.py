"""Options shared by the commands, and the checks made before any file is read.

The CLI speaks the engine's flat config keys (explicit flag > preset > default, as everywhere).
Order of work in every command: validate the configuration and the device, check the input
exists and the outputs are writable, then read data and run, so a typo costs a second, not an
hour.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import (
    ARCHITECTURE_KEYS,
    DEFAULT_PRESET,
    KEYS,
    PRECISIONS,
    PRESETS,
    ExecutionConfig,
    ModelConfig,
    PretrainConfig,
    ResolvedConfig,
    TrainConfig,
    resolve_config,
)
from ..errors import InputError

if TYPE_CHECKING:
    from ..engine import TrainedModel

PROG = 'ptychodus-ptychopinn'
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130
MODEL_SUFFIX = '.safetensors'

_KEY_TYPES: dict[str, type] = {
    f.name: type(f.default)
    for cls in (ModelConfig, TrainConfig, PretrainConfig, ExecutionConfig)
    for f in fields(cls)
    if f.name != 'n'
}
_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off')


def positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text} is negative')
    return value


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
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


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Explicit values: ``--set`` items, then dedicated flags (which win)."""
    values = parse_set(getattr(args, 'set', None))
    for key in KEYS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    return values


def add_message_options(parser: argparse.ArgumentParser) -> None:
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
        '--run-dir',
        metavar='DIR',
        help='also write the events (events.jsonl) and each snapshot (snapshot.npz) to this '
        'directory, for `studio --follow DIR` (e.g. a run on a cluster node)',
    )
    group.add_argument(
        '-v', '--verbose', action='store_true', help='also show informational log messages'
    )
    group.add_argument(
        '--debug', action='store_true', help='show the traceback of an internal error'
    )


def add_execution_options(parser: argparse.ArgumentParser) -> None:
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
        '--precision',
        choices=PRECISIONS,
        help='floating-point precision (mixed: the network in bfloat16, the physics in float32)',
    )


def add_config_options(parser: argparse.ArgumentParser, *, refine: bool) -> argparse._ArgumentGroup:
    group = parser.add_argument_group('configuration (explicit values beat the preset)')
    group.add_argument(
        '--preset',
        metavar='NAME',
        help=f'one of {", ".join(PRESETS)} (default {DEFAULT_PRESET})',
    )
    group.add_argument('--epochs', type=positive_int, metavar='N', help='network-fit epochs')
    if refine:
        group.add_argument(
            '--refine-epochs',
            type=positive_int,
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


def add_io_options(parser: argparse.ArgumentParser, *, model_required: bool) -> None:
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


def validate(args: argparse.Namespace, overrides: Mapping[str, Any]) -> ResolvedConfig:
    """Config and device, checked before any file is read."""
    if overrides.get('deterministic'):
        # cuBLAS needs this before CUDA starts for deterministic matrix products
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    config = resolve_config(getattr(args, 'preset', None), overrides)
    from ..device import resolve_device

    resolve_device(config.execution.device)
    return config


def device_label(name: str) -> str:
    """``cuda:0`` or ``auto (cuda:0)``: say what ``auto`` chose."""
    from ..device import resolve_device

    resolved = str(resolve_device(name))
    return resolved if resolved == name else f'{name} ({resolved})'


def load_model(path: str) -> TrainedModel:
    from ..checkpoint import load_model

    return load_model(path)


def apply_architecture(
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


def preview_path(args: argparse.Namespace, output: Path) -> Path | None:
    if args.no_preview:
        return None
    return Path(args.preview) if args.preview else output.with_suffix('.png')
