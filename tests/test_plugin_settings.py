"""The [PINN] settings group: explicit values beat the preset, and survive Save Settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.settings import SettingsRegistry  # noqa: E402

from ptychodus_ptychopinn import config  # noqa: E402
from ptychodus_ptychopinn.errors import ConfigError  # noqa: E402
from ptychodus_ptychopinn.plugin import discovery  # noqa: E402
from ptychodus_ptychopinn.plugin.settings import ENGINE_KEYS, PinnSettings  # noqa: E402

FAST = config.PRESETS['fast']


def _settings(text: str, tmp_path: Path) -> PinnSettings:
    registry = SettingsRegistry()
    settings = PinnSettings(registry)
    path = tmp_path / 'settings.ini'
    path.write_text(text)
    registry.open_settings(path)
    return settings


def test_every_engine_key_has_a_setting() -> None:
    # Device always has a value; PretrainMinutes is the plugin's own switch (0: do not
    # pretrain in Reconstruct), which feeds pretrain_minutes when above 0.
    fields = {spec.field for spec in ENGINE_KEYS} | {'device', 'pretrain_minutes'}
    assert fields == set(config.KEYS)


def test_defaults_are_the_standard_preset() -> None:
    settings = PinnSettings(SettingsRegistry())
    resolved = settings.resolve()
    assert resolved.preset == config.DEFAULT_PRESET
    assert resolved == config.resolve_config(config.DEFAULT_PRESET, {'device': 'auto'})


@pytest.mark.parametrize('epochs', [None, 3, 0])
def test_contract_through_model_core(epochs: int | None, tmp_path: Path) -> None:
    """The issue's contract, with ptychodus reading the file: preset alone, then Epochs."""
    text = '[Processing]\nAlgorithm = pinn_selfsupervised\n[PINN]\nPreset = fast\nDevice = cpu\n'
    if epochs is not None:
        text += f'Epochs = {epochs}\n'
    path = tmp_path / 'settings.ini'
    path.write_text(text)
    discovery.install()
    from ptychodus.model import ModelCore

    with ModelCore(path, log_level=logging.WARNING) as model:
        core = model.processing_core
        assert core.algorithm_parameter.get_value() == 'pinn_selfsupervised'
        library = core.pinn_library
        resolved = library.settings.resolve()
        expected = FAST['epochs'] if epochs is None else epochs
        assert resolved.preset == 'fast'
        assert resolved.execution.device == 'cpu'
        assert resolved.pinn.train.epochs == expected
        assert resolved.pinn.train.refine_epochs == FAST['refine_epochs']
        assert resolved.pinn.model.width == FAST['width']
        goal = core.algorithm_parameter.get_current_reconstructor().get_progress_goal()
        assert goal == expected + FAST['refine_epochs'] + 1


def test_unset_values_survive_save_settings(tmp_path: Path) -> None:
    registry = SettingsRegistry()
    settings = PinnSettings(registry)
    settings.parameter('Width').set_value(12)
    saved = tmp_path / 'saved.ini'
    registry.save_settings(saved)
    assert 'Epochs = -1' in saved.read_text()

    again = _settings(saved.read_text().replace('Preset = standard', 'Preset = quality'), tmp_path)
    resolved = again.resolve()
    quality = config.PRESETS['quality']
    assert resolved.pinn.train.epochs == quality['epochs']  # still from the preset
    assert resolved.pinn.train.probe_refinement is True
    assert resolved.pinn.model.width == 12  # still explicit


def test_switches_and_text(tmp_path: Path) -> None:
    settings = _settings(
        '[PINN]\nPreset = quality\nProbeRefinement = off\nLoss = Amplitude\nDeterministic = yes\n',
        tmp_path,
    )
    resolved = settings.resolve()
    assert resolved.pinn.train.probe_refinement is False  # explicit off beats the preset
    assert resolved.pinn.train.loss == 'amplitude'
    assert resolved.execution.deterministic is True


@pytest.mark.parametrize(
    ('line', 'key'),
    [
        ('Preset = turbo', '[PINN] Preset'),
        ('LearningRate = 5', '[PINN] LearningRate'),
        ('ProbeRefinement = maybe', '[PINN] ProbeRefinement'),
        ('Gridsize = 7', '[PINN] Gridsize'),
    ],
)
def test_errors_name_the_settings_key(line: str, key: str, tmp_path: Path) -> None:
    settings = _settings(f'[PINN]\n{line}\n', tmp_path)
    with pytest.raises(ConfigError, match=key.replace('[', r'\[').replace(']', r'\]')):
        settings.resolve()
