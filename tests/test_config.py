"""The config tree: precedence, validation messages, serialisation."""

import pytest

from ptychodus_ptychopinn.config import KEYS, PRESETS, PinnConfig, resolve_config
from ptychodus_ptychopinn.errors import ConfigError


def test_explicit_beats_preset_beats_default() -> None:
    default = resolve_config()
    assert default.preset == 'standard'
    fast = resolve_config('fast')
    assert fast.pinn.train.epochs == PRESETS['fast']['epochs']
    assert fast.pinn.model.width == PRESETS['fast']['width']
    explicit = resolve_config('fast', {'epochs': 3, 'width': None})
    assert explicit.pinn.train.epochs == 3
    assert explicit.pinn.model.width == PRESETS['fast']['width']  # None means "not given"
    assert resolve_config('FAST').preset == 'fast'


def test_every_preset_is_valid_and_uses_the_overlap_constraint() -> None:
    for name in PRESETS:
        resolved = resolve_config(name)
        assert resolved.pinn.model.gridsize >= 2  # gridsize 1 leaves patch phases free


@pytest.mark.parametrize(
    ('preset', 'overrides', 'field'),
    [
        ('turbo', {}, 'preset'),
        (None, {'epochs': -1}, 'epochs'),
        (None, {'gridsize': 5}, 'gridsize'),
        (None, {'loss': 'l2'}, 'loss'),
        (None, {'learning_rate': float('nan')}, 'learning_rate'),
        (None, {'deterministic': 'yes'}, 'deterministic'),
        (None, {'precision': 'float16'}, 'precision'),
        (None, {'tail_layers': -1}, 'tail_layers'),
        (None, {'tail_batch': -1}, 'tail_batch'),
        (None, {'no_such_key': 1}, 'key'),
    ],
)
def test_errors_name_the_field_and_the_allowed_values(preset, overrides, field) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(preset, overrides)
    assert info.value.field == field
    assert 'expected' in str(info.value)


def test_unsupported_pattern_size_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match='crop or bin'):
        resolve_config(n=100)


def test_config_round_trips_through_a_dict_and_is_frozen() -> None:
    config = resolve_config('quality', n=128).pinn
    assert PinnConfig.from_dict(config.to_dict()) == config
    with pytest.raises(AttributeError):
        config.model.width = 3  # type: ignore[misc]


def test_model_files_written_before_the_tail_keys_existed_get_the_defaults() -> None:
    """The tail has no weights, so an older file (no ``tail_layers`` or ``tail_batch`` in its
    config) loads and runs with the default tail: 16 layers, sub-batches of 16 windows."""
    stored = resolve_config('standard').pinn.to_dict()
    del stored['model']['tail_layers'], stored['model']['tail_batch']
    model = PinnConfig.from_dict(stored).model
    assert (model.tail_layers, model.tail_batch) == (16, 16)


def test_execution_keys_are_not_part_of_the_model_config() -> None:
    for key in ('device', 'seed', 'batch_size', 'num_threads', 'precision'):
        assert key in KEYS
        assert key not in PinnConfig().to_dict()['model']
        assert key not in PinnConfig().to_dict()['train']
