"""Model files: safetensors weights with a JSON header. Loading never executes code.

A model file holds the PINN config, the generator weights, the input scaling and the intensity
scale. safetensors stores raw little-endian tensors behind a size-prefixed JSON header, so a
hostile file can at worst be rejected; we also bound the header and file sizes, check the
format tag and version, and check every tensor's name, shape and dtype against the network the
config describes before any weight is used.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import PinnConfig
from .engine import TrainedModel
from .errors import ConfigError, ModelFileError
from .files import atomic_path
from .model.generators import build_generator

FORMAT = 'ptychodus-ptychopinn-model'
VERSION = 1
EXTENSION = '.safetensors'
FILE_FILTER = 'PINN models (*.safetensors)'
MAX_HEADER_BYTES = 1 << 20
MAX_FILE_BYTES = 4 << 30


def save_model(model: TrainedModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` atomically (temporary file, then rename); returns the path written."""
    target = Path(path)
    metadata = {
        'format': FORMAT,
        'version': str(VERSION),
        'config': json.dumps(model.config.to_dict()),
        'input_scale': repr(float(model.input_scale)),
        'intensity_scale': repr(float(model.intensity_scale)),
        'extra': json.dumps(dict(model.metadata)),
    }
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in model.state.items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def load_model(path: str | os.PathLike[str]) -> TrainedModel:
    """Read and fully validate a model file; any problem raises :class:`ModelFileError`."""
    source = Path(path)
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise ModelFileError(f'cannot read model file {source}: {exc.strerror}') from exc
    if size > MAX_FILE_BYTES:
        raise ModelFileError(
            f'{source} is {size} bytes, larger than any PINN model; not loading it.'
        )
    _check_header_size(source, size)
    try:
        with safe_open(str(source), framework='pt', device='cpu') as handle:
            metadata = handle.metadata() or {}
            config = _read_config(metadata, source)
            expected = build_generator(config.model).state_dict()
            state: dict[str, torch.Tensor] = {}
            names = set(handle.keys())
            if names != set(expected):
                missing = sorted(set(expected) - names)[:3]
                extra = sorted(names - set(expected))[:3]
                raise ModelFileError(
                    f'{source} does not match its own config (missing {missing}, unexpected '
                    f'{extra}); the file is damaged or was written by other software.'
                )
            for name, reference in expected.items():
                tensor_slice = handle.get_slice(name)
                shape = tuple(tensor_slice.get_shape())
                dtype = tensor_slice.get_dtype()
                if shape != tuple(reference.shape) or dtype not in ('F32', 'F16', 'BF16', 'F64'):
                    raise ModelFileError(
                        f'{source}: tensor {name} is {dtype}{list(shape)}, expected '
                        f'float{list(reference.shape)}; the file is damaged or incompatible.'
                    )
                tensor = handle.get_tensor(name).to(torch.float32)
                if not torch.isfinite(tensor).all():
                    raise ModelFileError(f'{source}: tensor {name} holds NaN or Inf.')
                state[name] = tensor
    except ModelFileError:
        raise
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ModelFileError(f'{source} is not a readable PINN model file ({exc}).') from exc
    return TrainedModel(
        config=config,
        state=state,
        input_scale=_positive_float(metadata, 'input_scale', source),
        intensity_scale=_positive_float(metadata, 'intensity_scale', source),
        metadata=_extra(metadata),
    )


def _check_header_size(source: Path, size: int) -> None:
    """Refuse files whose declared header is absurd before safetensors allocates for it."""
    try:
        with source.open('rb') as handle:
            prefix = handle.read(8)
    except OSError as exc:
        raise ModelFileError(f'cannot read model file {source}: {exc.strerror}') from exc
    if len(prefix) < 8:
        raise ModelFileError(f'{source} is truncated ({size} bytes); it is not a PINN model file.')
    (header,) = struct.unpack('<Q', prefix)
    if header > MAX_HEADER_BYTES or header + 8 > size:
        raise ModelFileError(
            f'{source} declares a {header}-byte header in a {size}-byte file; it is truncated, '
            'corrupt or not a PINN model file.'
        )


def _read_config(metadata: dict[str, str], source: Path) -> PinnConfig:
    if metadata.get('format') != FORMAT:
        raise ModelFileError(
            f'{source} is not a {FORMAT} file (format tag {metadata.get("format")!r}).'
        )
    try:
        version = int(metadata.get('version', ''))
    except ValueError as exc:
        raise ModelFileError(f'{source} has no valid format version.') from exc
    if version > VERSION:
        raise ModelFileError(
            f'{source} uses model format version {version}, newer than this package reads '
            f'({VERSION}); upgrade ptychodus-ptychopinn.'
        )
    if version < 1:
        raise ModelFileError(f'{source} has an invalid format version {version}.')
    try:
        data: Any = json.loads(metadata.get('config', ''))
        if not isinstance(data, dict):
            raise TypeError('config is not an object')
        return PinnConfig.from_dict(data)
    except (ValueError, TypeError, ConfigError) as exc:
        raise ModelFileError(f'{source} holds an invalid config: {exc}') from exc


def _positive_float(metadata: dict[str, str], key: str, source: Path) -> float:
    try:
        value = float(metadata.get(key, ''))
    except ValueError as exc:
        raise ModelFileError(f'{source} has no valid {key}.') from exc
    if not (value > 0.0 and value < float('inf')):
        raise ModelFileError(f'{source} has an invalid {key} ({value}).')
    return value


def _extra(metadata: dict[str, str]) -> dict[str, str]:
    try:
        data = json.loads(metadata.get('extra', '{}'))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
