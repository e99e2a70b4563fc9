"""One frozen, validated configuration tree, named presets and the execution config.

Precedence is explicit value > preset > default, applied once by :func:`resolve_config`.
Settings files, the CLI and the ptychodus adapter all speak the same flat keys (see
``KEYS``), so a value means the same thing wherever it comes from. The execution config
(device, threads, batch sizes, seed, determinism, precision) is kept apart from the model
config: it changes how fast a result arrives, never what a model file is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

GENERATORS = ('cnn', 'unrolled')
OBJECT_FAMILIES = ('dead_leaves', 'blocks', 'blobs')
LOSSES = ('poisson', 'amplitude')
PRECISIONS = ('float32', 'float64', 'mixed')
"""``mixed``: float32 physics, the network's convolutions in bfloat16 (``model.precision``)."""
SCHEDULES = ('cosine', 'constant')
GRIDSIZES = (1, 2, 3)
SUPPORTED_N = (32, 64, 128, 256)


@dataclass(frozen=True)
class ModelConfig:
    """What a model *is*: stored in model files and checked when loading one."""

    n: int = 64
    gridsize: int = 2
    generator: str = 'cnn'
    width: int = 16
    amp_max: float = 2.0
    layers: int = 8
    """Physics layers of the ``unrolled`` generator (the ``cnn`` generator ignores it)."""
    tail_layers: int = 16
    """Plain data-consistency layers after the learned ones (``unrolled`` only): no weights,
    the same physics without the learned correction (docs/pretraining.md: measured gain)."""
    tail_batch: int = 16
    """The first half of the tail updates the canvas in turn from interleaved sub-batches of
    this many windows (0: all windows at once, as the second half does): sequential updates
    remove the smooth phase errors that whole-scan averaging leaves (docs/pretraining.md)."""

    def validate(self) -> None:
        _check_choice('n', self.n, SUPPORTED_N, hint='crop or bin the patterns in ptychodus')
        _check_choice('gridsize', self.gridsize, GRIDSIZES)
        _check_choice('generator', self.generator, GENERATORS)
        _check_int_range('width', self.width, 4, 256)
        _check_float_range('amp_max', self.amp_max, 0.1, 100.0)
        _check_int_range('layers', self.layers, 1, 32)
        _check_int_range('tail_layers', self.tail_layers, 0, 64)
        _check_int_range('tail_batch', self.tail_batch, 0, 65536)
        if self.generator == 'unrolled' and self.gridsize < 2:
            raise ConfigError(
                'gridsize',
                self.gridsize,
                '2 or 3 with the unrolled generator (its physics layers need overlapping '
                'patterns; one pattern alone does not determine its patch)',
            )

    @property
    def channels(self) -> int:
        return self.gridsize * self.gridsize


@dataclass(frozen=True)
class TrainConfig:
    """How a network is fitted to a scan (self-supervised) and refined afterwards.

    ``epochs`` and ``refine_epochs`` are ceilings: a stage also ends when its time limit
    (seconds, 0: none) would be overrun or its loss reaches a plateau (``plateau_patience``
    epochs without a gain above ``plateau_tolerance`` of the stage's gain so far; 0: never).
    """

    epochs: int = 30
    learning_rate: float = 1e-3
    loss: str = 'poisson'
    schedule: str = 'cosine'
    learn_scale: bool = True
    probe_refinement: bool = False
    probe_learning_rate: float = 1.0
    position_refinement: bool = False
    position_learning_rate: float = 2.0
    position_refinement_start: int = 5
    """Refine epochs before the positions move (the object must be roughly right first)."""
    refine_epochs: int = 0
    refine_learning_rate: float = 2.0
    refine_batch_size: int = 32
    refine_loss: str = 'amplitude'
    refine_average_epochs: float = 3.0
    snapshot_every: int = 1
    fit_time_limit: float = 0.0
    refine_time_limit: float = 0.0
    plateau_patience: int = 0
    plateau_tolerance: float = 0.01

    def validate(self) -> None:
        _check_int_range('epochs', self.epochs, 0, 100_000)
        _check_float_range('learning_rate', self.learning_rate, 1e-7, 1.0)
        _check_choice('loss', self.loss, LOSSES)
        _check_choice('schedule', self.schedule, SCHEDULES)
        _check_bool('learn_scale', self.learn_scale)
        _check_bool('probe_refinement', self.probe_refinement)
        _check_float_range('probe_learning_rate', self.probe_learning_rate, 1e-7, 10.0)
        _check_bool('position_refinement', self.position_refinement)
        _check_float_range('position_learning_rate', self.position_learning_rate, 1e-4, 2.0)
        _check_int_range('position_refinement_start', self.position_refinement_start, 0, 100_000)
        _check_int_range('refine_epochs', self.refine_epochs, 0, 100_000)
        _check_float_range('refine_learning_rate', self.refine_learning_rate, 1e-6, 10.0)
        _check_int_range('refine_batch_size', self.refine_batch_size, 1, 65536)
        _check_choice('refine_loss', self.refine_loss, LOSSES)
        _check_float_range('refine_average_epochs', self.refine_average_epochs, 0.0, 1000.0)
        _check_int_range('snapshot_every', self.snapshot_every, 1, 100_000)
        _check_float_range('fit_time_limit', self.fit_time_limit, 0.0, 1e7)
        _check_float_range('refine_time_limit', self.refine_time_limit, 0.0, 1e7)
        _check_int_range('plateau_patience', self.plateau_patience, 0, 100_000)
        _check_float_range('plateau_tolerance', self.plateau_tolerance, 0.0, 1.0)


PRETRAIN_GENERATOR = 'unrolled'
"""The generator pretraining uses unless one is set (docs/pretraining.md says why)."""


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining on procedural objects under the experiment's probe (``engine.pretrain``).

    The run stops at ``pretrain_minutes`` or after ``pretrain_patterns`` simulated patterns,
    whichever comes first (0: no limit of that kind; at least one must be set).
    """

    pretrain_minutes: float = 10.0
    pretrain_patterns: int = 0
    pretrain_cluster: int = 16
    """Patterns per simulated cluster for the unrolled network (neighbouring scan points; it
    then infers on tiles of the whole scan). 0: the gridsize groups."""
    pretrain_batch_size: int = 4
    pretrain_learning_rate: float = 1e-3
    pretrain_families: str = ','.join(OBJECT_FAMILIES)
    pretrain_phase_range: float = 4.0
    pretrain_amplitude_min: float = 0.3
    pretrain_physics_weight: float = 0.0
    pretrain_dose_jitter: float = 0.5
    pretrain_checkpoint_every: float = 60.0
    pretrain_epoch_groups: int = 64
    """Simulated groups per pretraining epoch: how often the validation loss is scored."""

    def validate(self) -> None:
        _check_float_range('pretrain_minutes', self.pretrain_minutes, 0.0, 1e6)
        _check_int_range('pretrain_patterns', self.pretrain_patterns, 0, 10**12)
        if self.pretrain_minutes == 0 and self.pretrain_patterns == 0:
            raise ConfigError(
                'pretrain_minutes', 0, 'a positive number when pretrain_patterns is 0 too'
            )
        _check_int_range('pretrain_cluster', self.pretrain_cluster, 0, 4096)
        _check_int_range('pretrain_batch_size', self.pretrain_batch_size, 1, 65536)
        _check_float_range('pretrain_learning_rate', self.pretrain_learning_rate, 1e-7, 1.0)
        families = self.families
        if not families or any(f not in OBJECT_FAMILIES for f in families):
            raise ConfigError(
                'pretrain_families',
                self.pretrain_families,
                'a comma-separated list from ' + ', '.join(OBJECT_FAMILIES),
            )
        _check_float_range('pretrain_phase_range', self.pretrain_phase_range, 0.1, 6.283)
        _check_float_range('pretrain_amplitude_min', self.pretrain_amplitude_min, 0.0, 0.99)
        _check_float_range('pretrain_physics_weight', self.pretrain_physics_weight, 0.0, 100.0)
        _check_float_range('pretrain_dose_jitter', self.pretrain_dose_jitter, 0.0, 3.0)
        _check_float_range('pretrain_checkpoint_every', self.pretrain_checkpoint_every, 1.0, 1e6)
        _check_int_range('pretrain_epoch_groups', self.pretrain_epoch_groups, 1, 10**7)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in str(self.pretrain_families).split(',') if f.strip())


@dataclass(frozen=True)
class PinnConfig:
    """The model and training configuration: the part serialised with a model."""

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    pretrain: PretrainConfig = PretrainConfig()

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()
        self.pretrain.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PinnConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not ignored."""
        try:
            model = ModelConfig(**dict(data['model']))
            train = TrainConfig(**dict(data['train']))
            # Files written before pretraining existed have no such section.
            pretrain = PretrainConfig(**dict(data.get('pretrain', {})))
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                'config', dict(data), 'a mapping with model and train sections'
            ) from exc
        config = cls(model=model, train=train, pretrain=pretrain)
        config.validate()
        return config


@dataclass(frozen=True)
class ExecutionConfig:
    """How to run: never part of a model's identity."""

    device: str = 'auto'
    num_threads: int = 0
    batch_size: int = 16
    inference_batch_size: int = 64
    seed: int = 0
    deterministic: bool = False
    precision: str = 'float32'

    def validate(self) -> None:
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError('device', self.device, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        _check_int_range('num_threads', self.num_threads, 0, 1024)
        _check_int_range('batch_size', self.batch_size, 1, 65536)
        _check_int_range('inference_batch_size', self.inference_batch_size, 1, 65536)
        _check_int_range('seed', self.seed, 0, 2**32 - 1)
        _check_bool('deterministic', self.deterministic)
        _check_choice('precision', self.precision, PRECISIONS)


_MODEL_KEYS = tuple(f.name for f in fields(ModelConfig) if f.name != 'n')
ARCHITECTURE_KEYS: tuple[str, ...] = _MODEL_KEYS
"""Keys a loaded model fixes: a model is only usable with the architecture it was built with
(the pattern size comes from the data)."""
_TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
_PRETRAIN_KEYS = tuple(f.name for f in fields(PretrainConfig))
_EXEC_KEYS = tuple(f.name for f in fields(ExecutionConfig))
KEYS: tuple[str, ...] = _MODEL_KEYS + _TRAIN_KEYS + _PRETRAIN_KEYS + _EXEC_KEYS
"""Every flat key accepted by :func:`resolve_config` (the pattern size comes from the data)."""

PRESETS: dict[str, dict[str, Any]] = {
    # Budgets, not epoch counts: every stage also stops at its time limit. Measured
    # (docs/benchmarks.md): without pretraining, fitting the network to the scan before the
    # refinement did not improve the image on any object family or dose tried, and doubled
    # the time, so the presets start the refinement from the product's object (Epochs = 0);
    # the fit stays available (Epochs > 0) and a loaded model is always used. The probe is
    # refined in every preset: measured data come with an imperfect probe (the real
    # Siemens star is mostly noise without it), and it costs almost nothing when the probe
    # is right.
    # A good image in well under a minute on a laptop CPU at N = 64 (where the epoch
    # ceiling ends it, ~20 s); the time budget is for larger scans (N = 128, 400 points:
    # 41 epochs in 30 s fell short of LSQML's phase, docs/benchmarks.md).
    'fast': {
        'gridsize': 2,
        'width': 8,
        'epochs': 0,
        'learning_rate': 1e-3,
        'batch_size': 8,
        'refine_epochs': 100,
        'refine_time_limit': 60.0,
        'probe_refinement': True,
    },
    # The default: converged (loss plateau) or out of its budget.
    'standard': {
        'gridsize': 2,
        'width': 16,
        'epochs': 0,
        'learning_rate': 1e-3,
        'batch_size': 8,
        'refine_epochs': 200,
        'refine_time_limit': 240.0,
        'plateau_patience': 10,
        'plateau_tolerance': 0.001,
        'probe_refinement': True,
    },
    # Slow and thorough: a longer ceiling and budget, a stricter plateau, and the scan
    # positions refined too (measured: 1.2 px RMS errors fall to 0.03-0.1 px).
    'quality': {
        'gridsize': 2,
        'width': 32,
        'epochs': 0,
        'learning_rate': 1e-3,
        'batch_size': 4,
        'refine_epochs': 500,
        'refine_time_limit': 900.0,
        'plateau_patience': 20,
        'plateau_tolerance': 0.0005,
        'probe_refinement': True,
        'position_refinement': True,
    },
}
DEFAULT_PRESET = 'standard'


@dataclass(frozen=True)
class ResolvedConfig:
    """The outcome of resolution: what to build and how to run it, plus where it came from."""

    pinn: PinnConfig
    execution: ExecutionConfig
    preset: str


def resolve_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    n: int = 64,
) -> ResolvedConfig:
    """Build and validate the config tree: explicit ``overrides`` > ``preset`` > defaults.

    ``None`` values in ``overrides`` mean "not given" so callers can pass optional CLI
    arguments straight through.
    """
    name = DEFAULT_PRESET if preset is None or preset == '' else str(preset).casefold()
    if name not in PRESETS:
        raise ConfigError('preset', preset, ', '.join(repr(p) for p in PRESETS))
    values: dict[str, Any] = dict(PRESETS[name])
    for key, value in (overrides or {}).items():
        if key not in KEYS:
            raise ConfigError('key', key, 'one of ' + ', '.join(KEYS))
        if value is not None:
            values[key] = value

    model = ModelConfig(n=n, **{k: values[k] for k in _MODEL_KEYS if k in values})
    train = TrainConfig(**{k: values[k] for k in _TRAIN_KEYS if k in values})
    pretrain = PretrainConfig(**{k: values[k] for k in _PRETRAIN_KEYS if k in values})
    execution = ExecutionConfig(**{k: values[k] for k in _EXEC_KEYS if k in values})
    pinn = PinnConfig(model=model, train=train, pretrain=pretrain)
    pinn.validate()
    execution.validate()
    return ResolvedConfig(pinn=pinn, execution=execution, preset=name)


def _check_choice(field: str, value: object, allowed: tuple[Any, ...], hint: str = '') -> None:
    if isinstance(value, bool) or value not in allowed:
        text = 'one of ' + ', '.join(repr(a) for a in allowed)
        raise ConfigError(field, value, text + (f' ({hint})' if hint else ''))


def _check_int_range(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(field, value, f'an integer from {low} to {high}')


def _check_float_range(field: str, value: object, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not low <= float(value) <= high:  # type: ignore[arg-type]
        raise ConfigError(field, value, f'a number from {low:g} to {high:g}')


def _check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(field, value, 'true or false')
