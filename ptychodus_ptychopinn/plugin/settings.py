"""The ``[PINN]`` settings group: ptychodus parameters mapped onto the engine's flat keys.

"Explicit beats preset" needs to know which values the user set. A ptychodus settings
file is rewritten whole by *Save Settings*, so "present in the file" is lost on the first
save; instead every key that the engine's presets or defaults can supply has an *unset*
value that survives saving and reloading:

- numbers: any negative value (the default is -1) means "from the preset";
- text and on/off keys: an empty value (the default) means "from the preset";
  on/off keys accept true/false, yes/no, on/off, 1/0.

``Preset`` and ``Device`` always have a value. ``FineTuneEpochs``, ``InferRefineEpochs``,
``ValidationFraction`` and ``PretrainMinutes`` belong to the plugin alone and have plain
defaults.
Every key and default is listed in docs/ptychodus.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ptychodus.api.parameters import (
    IntegerParameter,
    Parameter,
    RealParameter,
    StringParameter,
)
from ptychodus.api.settings import SettingsRegistry

from ..config import DEFAULT_PRESET, ResolvedConfig, resolve_config
from ..errors import ConfigError

GROUP_NAME = 'PINN'
UNSET_NUMBER = -1
UNSET_TEXT = ''
TRUE_WORDS = ('1', 'true', 't', 'yes', 'y', 'on')
FALSE_WORDS = ('0', 'false', 'f', 'no', 'n', 'off')


@dataclass(frozen=True)
class KeySpec:
    """One settings key: its name in ``[PINN]``, the engine field it feeds, its kind."""

    name: str
    field: str
    kind: str  # 'int', 'real', 'text' or 'switch' (on/off with an unset state)
    help: str


ENGINE_KEYS: tuple[KeySpec, ...] = (
    KeySpec('Epochs', 'epochs', 'int', 'network-fit epochs on the scan'),
    KeySpec('RefineEpochs', 'refine_epochs', 'int', 'direct object refinement epochs'),
    KeySpec('BatchSize', 'batch_size', 'int', 'scan-point groups per optimiser step'),
    KeySpec('InferenceBatchSize', 'inference_batch_size', 'int', 'groups per inference pass'),
    KeySpec('LearningRate', 'learning_rate', 'real', 'network learning rate'),
    KeySpec('RefineLearningRate', 'refine_learning_rate', 'real', 'refinement learning rate'),
    KeySpec('RefineBatchSize', 'refine_batch_size', 'int', 'scan points per refinement step'),
    KeySpec('ProbeLearningRate', 'probe_learning_rate', 'real', 'probe learning rate'),
    KeySpec('Gridsize', 'gridsize', 'int', 'patterns per group is Gridsize squared'),
    KeySpec('Width', 'width', 'int', 'network width (channels of the first layer)'),
    KeySpec('Generator', 'generator', 'text', 'network architecture'),
    KeySpec('AmpMax', 'amp_max', 'real', 'largest object amplitude the network can output'),
    KeySpec('Layers', 'layers', 'int', 'physics layers of the unrolled network'),
    KeySpec('TailLayers', 'tail_layers', 'int', 'plain physics layers after the learned ones'),
    KeySpec('TailBatch', 'tail_batch', 'int', 'windows per sequential update in the tail'),
    KeySpec('Loss', 'loss', 'text', 'network-fit loss: poisson or amplitude'),
    KeySpec('RefineLoss', 'refine_loss', 'text', 'refinement loss: amplitude or poisson'),
    KeySpec(
        'RefineAverageEpochs',
        'refine_average_epochs',
        'real',
        'epochs the returned object averages over (0: the last step)',
    ),
    KeySpec('Schedule', 'schedule', 'text', 'learning-rate schedule: cosine or constant'),
    KeySpec('ProbeRefinement', 'probe_refinement', 'switch', 'refine the probe too'),
    KeySpec('PositionRefinement', 'position_refinement', 'switch', 'refine the scan positions'),
    KeySpec('PositionLearningRate', 'position_learning_rate', 'real', 'position step (1: full)'),
    KeySpec(
        'PositionRefinementStart', 'position_refinement_start', 'int', 'epochs before moving them'
    ),
    KeySpec('LearnScale', 'learn_scale', 'switch', 'learn the intensity scale'),
    KeySpec('SnapshotEvery', 'snapshot_every', 'int', 'epochs between object snapshots'),
    KeySpec('FitTimeLimit', 'fit_time_limit', 'real', 'seconds for the network fit (0: none)'),
    KeySpec('RefineTimeLimit', 'refine_time_limit', 'real', 'seconds for refinement (0: none)'),
    KeySpec('PlateauPatience', 'plateau_patience', 'int', 'epochs without gain that end a stage'),
    KeySpec('PlateauTolerance', 'plateau_tolerance', 'real', 'what counts as no gain (share)'),
    KeySpec('PretrainPatterns', 'pretrain_patterns', 'int', 'pretraining pattern budget (0: none)'),
    KeySpec('PretrainCluster', 'pretrain_cluster', 'int', 'patterns per simulated cluster'),
    KeySpec('PretrainBatchSize', 'pretrain_batch_size', 'int', 'clusters per pretraining step'),
    KeySpec('PretrainLearningRate', 'pretrain_learning_rate', 'real', 'pretraining learning rate'),
    KeySpec('PretrainFamilies', 'pretrain_families', 'text', 'object families, comma-separated'),
    KeySpec('PretrainPhaseRange', 'pretrain_phase_range', 'real', 'largest phase range (rad)'),
    KeySpec('PretrainAmplitudeMin', 'pretrain_amplitude_min', 'real', 'lowest amplitude'),
    KeySpec('PretrainPhysicsWeight', 'pretrain_physics_weight', 'real', 'counts term weight'),
    KeySpec('PretrainDoseJitter', 'pretrain_dose_jitter', 'real', 'log-range of the dose drawn'),
    KeySpec('PretrainCheckpointEvery', 'pretrain_checkpoint_every', 'real', 'seconds'),
    KeySpec('PretrainEpochGroups', 'pretrain_epoch_groups', 'int', 'clusters per epoch'),
    KeySpec('NumThreads', 'num_threads', 'int', 'CPU threads (0: torch decides)'),
    KeySpec('Seed', 'seed', 'int', 'random seed'),
    KeySpec('Deterministic', 'deterministic', 'switch', 'force deterministic algorithms'),
    KeySpec('Precision', 'precision', 'text', 'float32, float64 or mixed'),
)
"""Keys whose unset value defers to the preset (or the engine default)."""

_BY_FIELD = {spec.field: spec.name for spec in ENGINE_KEYS}
_BY_FIELD.update({'preset': 'Preset', 'device': 'Device'})


class PinnSettings:
    """Creates the ``[PINN]`` group in a ptychodus settings registry and resolves it."""

    def __init__(self, registry: SettingsRegistry) -> None:
        self.group = registry.create_group(GROUP_NAME)
        self.preset = self.group.create_string_parameter('Preset', DEFAULT_PRESET)
        self.device = self.group.create_string_parameter('Device', 'auto')
        self.engine: dict[str, Parameter[Any]] = {}
        for spec in ENGINE_KEYS:
            if spec.kind == 'int':
                parameter: Parameter[Any] = self.group.create_integer_parameter(
                    spec.name, UNSET_NUMBER, minimum=UNSET_NUMBER
                )
            elif spec.kind == 'real':
                parameter = self.group.create_real_parameter(spec.name, float(UNSET_NUMBER))
            else:
                parameter = self.group.create_string_parameter(spec.name, UNSET_TEXT)
            self.engine[spec.name] = parameter
        self.fine_tune_epochs = self.group.create_integer_parameter('FineTuneEpochs', 0, minimum=0)
        self.infer_refine_epochs = self.group.create_integer_parameter(
            'InferRefineEpochs', 0, minimum=0
        )
        self.validation_fraction = self.group.create_real_parameter(
            'ValidationFraction', 0.1, minimum=0.0, maximum=0.9
        )
        self.pretrain_minutes = self.group.create_real_parameter(
            'PretrainMinutes', 0.0, minimum=0.0
        )

    def parameter(self, name: str) -> Parameter[Any]:
        """The parameter called ``name`` (as in the settings file)."""
        return self.group.parameters()[name]

    def overrides(self) -> dict[str, Any]:
        """Engine keys the user set (unset ones are left out), plus the device."""
        values: dict[str, Any] = {}
        device = self.device.get_value().strip()
        values['device'] = device or 'auto'
        for spec in ENGINE_KEYS:
            value = _read(spec, self.engine[spec.name])
            if value is not None:
                values[spec.field] = value
        return values

    def request(self, architecture: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """``(preset, overrides)`` for the engine; ``architecture`` (a loaded model's) wins."""
        overrides = self.overrides()
        overrides.update(architecture or {})
        return self.preset.get_value().strip(), overrides

    def resolve(
        self, *, n: int = 64, architecture: Mapping[str, Any] | None = None
    ) -> ResolvedConfig:
        """Explicit settings > preset > defaults, checked; errors name the settings key."""
        with named_errors():
            preset, overrides = self.request(architecture)
            return resolve_config(preset, overrides, n=n)


@contextmanager
def named_errors() -> Iterator[None]:
    """Re-raise the engine's ConfigError under the settings key, e.g. ``[PINN] Epochs``."""
    try:
        yield
    except ConfigError as exc:
        name = _BY_FIELD.get(exc.field)
        if name is None:
            raise
        raise ConfigError(f'[{GROUP_NAME}] {name}', exc.value, exc.allowed) from exc


def _read(spec: KeySpec, parameter: Parameter[Any]) -> Any:
    """The explicit value of ``parameter``, or None when it is unset."""
    if isinstance(parameter, (IntegerParameter, RealParameter)):
        number = parameter.get_value()
        return None if number < 0 else number
    assert isinstance(parameter, StringParameter)
    text = parameter.get_value().strip()
    if text == UNSET_TEXT:
        return None
    if spec.kind == 'switch':
        word = text.casefold()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ConfigError(
            f'[{GROUP_NAME}] {spec.name}', text, 'true, false or empty (from the preset)'
        )
    return text.casefold()
