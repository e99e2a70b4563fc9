"""Model files: round trip; hostile or damaged files give ModelFileError, never run code."""

import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptychodus_ptychopinn.checkpoint import load_model, save_model
from ptychodus_ptychopinn.config import resolve_config
from ptychodus_ptychopinn.engine import TrainedModel
from ptychodus_ptychopinn.errors import ModelFileError
from ptychodus_ptychopinn.model.generators import build_generator


def _model(width: int = 4, n: int = 32) -> TrainedModel:
    config = resolve_config('fast', {'width': width}, n=n).pinn
    torch.manual_seed(0)
    state = build_generator(config.model).state_dict()
    return TrainedModel(config=config, state=state, input_scale=0.25, intensity_scale=1.5)


def test_round_trip_keeps_config_weights_and_scales(tmp_path: Path) -> None:
    model = _model()
    path = save_model(model, tmp_path / 'm.safetensors')
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.input_scale == model.input_scale
    assert loaded.intensity_scale == model.intensity_scale
    for name, tensor in model.state.items():
        assert torch.equal(loaded.state[name], tensor)
    assert not list(tmp_path.glob('*.part'))


def test_truncated_wrong_magic_and_missing_files(tmp_path: Path) -> None:
    path = save_model(_model(), tmp_path / 'm.safetensors')
    data = path.read_bytes()
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        load_model(cut)
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'PK\x03\x04' + os.urandom(200))
    with pytest.raises(ModelFileError):
        load_model(junk)
    with pytest.raises(ModelFileError, match='cannot read'):
        load_model(tmp_path / 'absent.safetensors')


def test_enormous_declared_header_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / 'huge.safetensors'
    path.write_bytes(struct.pack('<Q', 2**60) + b'{}')
    with pytest.raises(ModelFileError, match='header'):
        load_model(path)


def test_wrong_shapes_and_newer_versions_are_rejected(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_model(_model(), tmp_path / 'm.safetensors')
    with safe_open(str(path), framework='pt') as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    name = next(iter(tensors))
    bad = dict(tensors)
    bad[name] = torch.zeros(3, 3)
    save_file(bad, str(tmp_path / 'shape.safetensors'), metadata=metadata)
    with pytest.raises(ModelFileError, match='expected'):
        load_model(tmp_path / 'shape.safetensors')
    save_file(tensors, str(tmp_path / 'v9.safetensors'), metadata={**metadata, 'version': '9'})
    with pytest.raises(ModelFileError, match='newer'):
        load_model(tmp_path / 'v9.safetensors')


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_a_pickle_exploit_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.safetensors'
    path.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(ModelFileError):
        load_model(path)
    torch.save({'x': _Exploit(str(marker))}, tmp_path / 'evil.pt')
    with pytest.raises(ModelFileError):
        load_model(tmp_path / 'evil.pt')
    assert not marker.exists()


def _header_length(raw: bytes) -> int:
    return 8 + struct.unpack('<Q', raw[:8])[0]


def _fuzz_once(tmp_path: Path, data: st.DataObject) -> None:
    """Overwrite a few bytes (often inside the JSON header, where a parser is most exposed),
    maybe truncate, and load: only ModelFileError may come out."""
    original = tmp_path / 'base.safetensors'
    if not original.exists():
        save_model(_model(), original)
    raw = bytearray(original.read_bytes())
    header_end = _header_length(bytes(raw))
    for _ in range(data.draw(st.integers(1, 8))):
        end = header_end if data.draw(st.booleans()) else len(raw)
        index = data.draw(st.integers(0, end - 1))
        raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    target = tmp_path / 'fuzz.safetensors'
    target.write_bytes(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    try:
        load_model(target)
    except ModelFileError:
        pass


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_fuzzed_files_raise_only_model_file_error(tmp_path: Path, data: st.DataObject) -> None:
    _fuzz_once(tmp_path, data)


@pytest.mark.slow
@settings(
    max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_fuzzed_files_raise_only_model_file_error_long(tmp_path: Path, data: st.DataObject) -> None:
    """The same fuzz, 5000 files (about 30 s): run with ``-m slow``."""
    _fuzz_once(tmp_path, data)


@pytest.mark.parametrize('dtype', [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_wrong_dtypes_are_rejected(tmp_path: Path, dtype: torch.dtype) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_model(_model(), tmp_path / 'm.safetensors')
    with safe_open(str(path), framework='pt') as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = torch.ones_like(tensors[name]).to(dtype)
    save_file(tensors, str(tmp_path / 'dtype.safetensors'), metadata=metadata)
    with pytest.raises(ModelFileError, match=f'tensor {name} is .*expected float'):
        load_model(tmp_path / 'dtype.safetensors')


def test_other_float_dtypes_load_as_float32(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_model(_model(), tmp_path / 'm.safetensors')
    with safe_open(str(path), framework='pt') as handle:
        metadata = handle.metadata()
    tensors = {k: v.to(torch.float64) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(tmp_path / 'f64.safetensors'), metadata=metadata)
    loaded = load_model(tmp_path / 'f64.safetensors')
    assert all(t.dtype == torch.float32 for t in loaded.state.values())


def test_a_header_declaring_enormous_tensors_is_refused(tmp_path: Path) -> None:
    """A small file whose header claims exabytes of weights: refused without allocating."""
    import json

    path = save_model(_model(), tmp_path / 'm.safetensors')
    raw = path.read_bytes()
    header = json.loads(raw[8 : _header_length(raw)])
    name = next(k for k in header if k != '__metadata__')
    header[name] = {'dtype': 'F32', 'shape': [2**31, 2**31], 'data_offsets': [0, 2**64 - 1]}
    text = json.dumps(header).encode()
    hostile = tmp_path / 'huge_tensor.safetensors'
    hostile.write_bytes(struct.pack('<Q', len(text)) + text + raw[_header_length(raw) :])
    with pytest.raises(ModelFileError, match='not a readable PINN model file'):
        load_model(hostile)
