"""The ``PINN`` reconstructor library: ``pinn_selfsupervised`` and ``pinn_pretrained``.

ptychodus runs ``reconstruct``/``train`` on its single worker thread and can stop a run
only between yields, by dropping the generator. So every run here is a generator that
yields at least once per epoch, and whose ``finally`` closes the engine's generator, which
frees the network and the accelerator memory. ``get_progress_goal`` reports the running
job's goal (re-read by ptychodus at every yield), else what the settings would run.

Errors the user can fix (:class:`~ptychodus_ptychopinn.errors.InputError`, bad model
files, a diverging loss) are logged as one clear line and re-raised, so ptychodus marks the
run as failed (batch mode exits with a failure code).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from ptychodus.api.io import (
    StandardFileLayout,
    save_training_data,
)
from ptychodus.api.product import LossValue, Product
from ptychodus.api.reconstruct import (
    ReconstructInput,
    Reconstructor,
    ReconstructorLibrary,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
)
from ptychodus.api.settings import SettingsRegistry

from .. import checkpoint, engine
from ..config import ARCHITECTURE_KEYS
from ..device import resolve_device
from ..engine import (
    BatchEvent,
    EpochEvent,
    Event,
    ResultEvent,
    SnapshotEvent,
    StageEndEvent,
    TrainedModel,
)
from ..errors import InputError, ModelFileError, PinnError
from ..factory import Payload
from ..files import check_writable
from . import LOGGER_NAME
from .convert import (
    LossScale,
    ProductBuilder,
    ScanArrays,
    scan_arrays,
)
from .layout import training_arrays
from .pretrain import pretrain_overrides, run_pretraining
from .settings import PinnSettings, named_errors

logger = logging.getLogger(__name__)

LIBRARY_NAME = 'PINN'
TRAINING_DATA_FILTER = 'PINN training data (*.h5)'
_HANDLED = (PinnError, FloatingPointError)


class ModelSlot:
    """The model loaded into ``Pretrained``; ``SelfSupervised`` warm-starts from it too."""

    def __init__(self) -> None:
        self.model: TrainedModel | None = None
        self.source = ''


class _PinnReconstructor:
    """What both reconstructors share: settings, the model slot, payloads, the run loop."""

    def __init__(self, settings: PinnSettings, slot: ModelSlot) -> None:
        self._settings = settings
        self._slot = slot
        self._goal: int | None = None

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _idle_goal(self) -> int:
        raise NotImplementedError

    def get_progress_goal(self) -> int:
        if self._goal is not None:
            return self._goal
        try:
            return self._idle_goal()
        except PinnError:
            return 0

    def _payload(self, arrays: ScanArrays, model: TrainedModel | None) -> Payload:
        architecture = _architecture(model, self._settings.overrides())
        with named_errors():
            preset, overrides = self._settings.request(architecture)
            resolve_device(overrides['device'])  # a missing device fails before any work
            return arrays.payload(preset=preset, overrides=overrides)

    def _run(
        self,
        parameters: ReconstructInput,
        model: TrainedModel | None,
        *,
        fit_epochs: int | None = None,
        refine_epochs: int | None = None,
        progress_before: int = 0,
    ) -> Iterator[ReconstructOutput]:
        """Drive one engine run, yielding a product per epoch; closing it stops the run.
        ``progress_before``: units an earlier part of the job (pretraining) already used."""
        events: Generator[Event, None, None] | None = None
        progress = 0
        try:
            payload = self._payload(scan_arrays(parameters), model)
            train = payload.config.pinn.train
            n_fit = train.epochs if fit_epochs is None else fit_epochs
            n_refine = train.refine_epochs if refine_epochs is None else refine_epochs
            self._goal = progress_before + engine.progress_goal(
                payload.config.pinn, fit_epochs=n_fit, refine_epochs=n_refine
            )
            logger.info(
                '%s: %d patterns of %d x %d on %s, preset %s, %d fit + %d refine epochs%s.',
                self.name,
                payload.num_patterns,
                payload.n,
                payload.n,
                resolve_device(payload.config.execution.device),
                payload.config.preset,
                n_fit,
                n_refine,
                f', starting from the model {self._slot.source}' if model is not None else '',
            )
            refine_probe = train.probe_refinement and n_refine > 0
            events = engine.reconstruct(payload, model, fit_epochs=n_fit, refine_epochs=n_refine)
            driver = _Driver(ProductBuilder(parameters.product), LossScale(payload, n_fit))
            del payload
            for output in driver.drive(events, refine_probe, parameters.product):
                progress = progress_before + output.progress
                yield ReconstructOutput(product=output.product, progress=progress)
            logger.info('%s finished (%d/%d).', self.name, progress, self._goal)
        except GeneratorExit:
            logger.info('%s stopped at %d/%s.', self.name, progress, self._goal)
            raise
        except _HANDLED as exc:
            logger.error('%s failed: %s', self.name, exc)
            raise
        finally:
            if events is not None:
                events.close()
            self._goal = None


class _Driver:
    """Turns engine events into ``ReconstructOutput``: one per epoch, new objects when
    the engine sends a snapshot (every ``SnapshotEvery`` epochs), else the last one."""

    def __init__(self, builder: ProductBuilder, scale: LossScale) -> None:
        self.builder = builder
        self.scale = scale
        self.history: list[tuple[int, float]] = []
        self.object: np.ndarray | None = None
        self.probe: np.ndarray | None = None
        self.positions: np.ndarray | None = None

    def _output(self, progress: int, initial: np.ndarray) -> ReconstructOutput:
        obj = initial if self.object is None else self.object
        losses = self.scale.losses(self.history)
        product = self.builder.build(obj, self.probe, losses, self.positions)
        return ReconstructOutput(product=product, progress=progress)

    def drive(
        self, events: Iterator[Event], refine_probe: bool, product: Product
    ) -> Iterator[ReconstructOutput]:
        initial = product.object_.get_layer(0)
        pending: int | None = None
        last = -1
        for event in events:
            snapshot_due = isinstance(event, SnapshotEvent) and event.progress == pending
            if pending is not None and not snapshot_due:
                yield self._output(pending, initial)
                last, pending = pending, None
            if isinstance(event, BatchEvent):
                continue
            if isinstance(event, EpochEvent):
                self.history.append((event.progress, event.loss))
                pending = event.progress
                logger.info(
                    '%s epoch %d/%d: loss %.6g (%.2f s)',
                    event.stage,
                    event.epoch + 1,
                    event.num_epochs,
                    event.loss,
                    event.seconds,
                )
            elif isinstance(event, StageEndEvent):
                logger.info(
                    '%s stopped after %d of at most %d epochs (%.1f s): %s.',
                    event.stage,
                    event.epochs,
                    event.max_epochs,
                    event.seconds,
                    event.reason_text,
                )
            elif isinstance(event, SnapshotEvent):
                pending = None
                self._take(event.object, event.probe, refine_probe)
                yield self._output(event.progress, initial)
                last = event.progress
            elif isinstance(event, ResultEvent):
                self._take(event.object, event.probe, refine_probe)
                self.positions = event.positions
                if event.positions is not None or event.progress != last:
                    yield self._output(event.progress, initial)
                    last = event.progress
        if pending is not None:
            yield self._output(pending, initial)

    def _take(self, obj: np.ndarray, probe: np.ndarray, refine_probe: bool) -> None:
        self.object = obj
        if refine_probe:
            self.probe = probe


def _architecture(model: TrainedModel | None, explicit: dict[str, Any]) -> dict[str, Any]:
    """A loaded model's architecture keys, which win over the settings (with a warning)."""
    if model is None:
        return {}
    config = model.config.model
    values = {key: getattr(config, key) for key in ARCHITECTURE_KEYS}
    clashes = [f'{k}={explicit[k]}' for k in values if k in explicit and explicit[k] != values[k]]
    if clashes:
        logger.warning(
            'The loaded model fixes %s; ignoring the settings %s.',
            ', '.join(f'{k}={v}' for k, v in values.items()),
            ', '.join(clashes),
        )
    return values


class SelfSupervisedReconstructor(_PinnReconstructor, Reconstructor):
    """Fits the network to this scan (warm-started from a loaded model when there is one)."""

    @property
    def name(self) -> str:
        return 'SelfSupervised'

    def _idle_goal(self) -> int:
        return engine.progress_goal(self._settings.resolve().pinn)

    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        model = self._slot.model
        n = int(np.shape(parameters.diffraction_patterns)[-1])
        if model is not None and model.config.model.n != n:
            logger.warning(
                'The loaded model %s takes %d x %d patterns, this scan has %d x %d; fitting '
                'from scratch instead of warm-starting.',
                self._slot.source,
                model.config.model.n,
                model.config.model.n,
                n,
                n,
            )
            model = None
        return self._run(parameters, model)


class PretrainedReconstructor(_PinnReconstructor, TrainableReconstructor):
    """Infers with a loaded model (optionally fine-tuned on the scan); trains models."""

    @property
    def name(self) -> str:
        return 'Pretrained'

    def _idle_goal(self) -> int:
        pretrain = self._slot.model is None and self._settings.pretrain_minutes.get_value() > 0
        return (
            (engine.PRETRAIN_PROGRESS_UNITS if pretrain else 0)
            + self._settings.fine_tune_epochs.get_value()
            + self._settings.infer_refine_epochs.get_value()
            + 1
        )

    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        model = self._slot.model
        minutes = self._settings.pretrain_minutes.get_value()
        if model is None and minutes > 0:
            return self._pretrain_then_infer(parameters, minutes)
        if model is None:
            message = (
                'no model is loaded; load a model file first (GUI: Load Model...; batch mode: '
                f'put model{checkpoint.EXTENSION} in the input directory), set [PINN] '
                'PretrainMinutes to pretrain one for this probe, train one, or use '
                'pinn_selfsupervised.'
            )
            logger.error('%s failed: %s', self.name, message)
            raise InputError(message)
        return self._run(
            parameters,
            model,
            fit_epochs=self._settings.fine_tune_epochs.get_value(),
            refine_epochs=self._settings.infer_refine_epochs.get_value(),
        )

    def _pretrain_then_infer(
        self, parameters: ReconstructInput, minutes: float
    ) -> Iterator[ReconstructOutput]:
        """Pretrain for this product's probe, load the model, then infer (and fine-tune or
        refine as the settings say). Stop during pretraining keeps nothing."""
        received: list[TrainedModel] = []
        units = engine.PRETRAIN_PROGRESS_UNITS
        try:
            with named_errors():
                preset, _ = self._settings.request()
                explicit = self._settings.overrides()
                resolve_device(explicit['device'])
                payload = scan_arrays(parameters).payload(
                    preset=preset, overrides=pretrain_overrides(minutes, explicit)
                )
            self._goal = self._idle_goal()
            yield from run_pretraining(payload, parameters, received)
            del payload
        except GeneratorExit:
            logger.info('%s: pretraining stopped; no model was kept.', self.name)
            raise
        except _HANDLED as exc:
            logger.error('%s failed: %s', self.name, exc)
            raise
        finally:
            self._goal = None
        model = received[0]
        self._slot.model = model
        self._slot.source = 'pretrained for this probe (not saved: Save Model... keeps it)'
        logger.info(
            'Pretrained on %s simulated patterns in %s s; the model is loaded.',
            model.metadata.get('pretrain_patterns', '?'),
            model.metadata.get('pretrain_seconds', '?'),
        )
        yield from self._run(
            parameters,
            model,
            fit_epochs=self._settings.fine_tune_epochs.get_value(),
            refine_epochs=self._settings.infer_refine_epochs.get_value(),
            progress_before=units,
        )

    # -- model files -------------------------------------------------------------------------

    def is_model_loaded(self) -> bool:
        return self._slot.model is not None

    def get_model_file_filter(self) -> str:
        return checkpoint.FILE_FILTER

    def get_model_file_extension(self) -> str:
        return checkpoint.EXTENSION

    def load_model_from_file(self, file_path: Path) -> None:
        try:
            model = checkpoint.load_model(file_path)
        except ModelFileError as exc:
            logger.error('Cannot load the model: %s', exc)
            raise
        self._slot.model = model
        self._slot.source = str(file_path)
        config = model.config.model
        logger.info(
            'Loaded model %s (%d x %d patterns, gridsize %d, width %d).',
            file_path,
            config.n,
            config.n,
            config.gridsize,
            config.width,
        )

    def save_model(self, file_path: Path) -> None:
        model = self._slot.model
        if model is None:
            message = 'there is no model to save; load or train one first.'
            logger.error('Cannot save the model: %s', message)
            raise InputError(message)
        try:
            path = checkpoint.save_model(model, file_path)
        except OSError as exc:
            message = (
                f'cannot save the model to {file_path} ({exc.strerror or exc}); choose a file in '
                'a writable directory.'
            )
            logger.error('Cannot save the model: %s', message)
            raise InputError(message) from exc
        logger.info('Saved model to %s.', path)

    # -- training ----------------------------------------------------------------------------

    def get_training_data_file_filter(self) -> str:
        return TRAINING_DATA_FILTER

    def export_training_data(self, file_path: Path, parameters: ReconstructInput) -> None:
        """ptychodus's HDF5 training format; bad pixels are zeroed and masked, not inpainted
        (the loss ignores them, so inpainting would cost time and add nothing)."""
        path = Path(file_path)
        if not path.suffix:
            path = path.with_suffix('.h5')
        save_training_data(path, parameters, inpaint_bad_pixels=False)
        logger.info('Exported %d patterns to %s.', len(parameters.diffraction_patterns), path)

    def train(self, input_path: Path, output_path: Path) -> Iterator[TrainOutput]:
        """Train a fresh network on exported data; save it into ``output_path`` and load it.

        Per-epoch outputs carry the training loss (and the validation loss when the engine's
        EpochEvent has it); the last output carries both histories. Values are the engine's raw
        mean loss (ptychodus does not plot training losses).
        """
        events: Generator[Event, None, None] | None = None
        try:
            target = _model_path(Path(output_path))
            check_writable(target, 'model file')  # before training, not after hours of it
            source, arrays = training_arrays(Path(input_path))
            payload = self._payload(arrays, None)
            epochs = payload.config.pinn.train.epochs
            self._goal = epochs
            fraction = self._settings.validation_fraction.get_value()
            logger.info(
                'Training on %s: %d patterns, %d epochs, %.0f%% held out for validation, on %s.',
                source,
                payload.num_patterns,
                epochs,
                100 * fraction,
                payload.config.execution.device,
            )
            events = engine.train(payload, validation_fraction=fraction)
            del payload
            training: list[LossValue] = []
            validation: list[LossValue] = []
            result: ResultEvent | None = None
            for event in events:
                if isinstance(event, EpochEvent):
                    training.append(LossValue(event.progress, event.loss))
                    if event.validation_loss is not None:
                        validation.append(LossValue(event.progress, event.validation_loss))
                    logger.info('train epoch %d/%d: loss %.6g', event.epoch + 1, epochs, event.loss)
                    yield TrainOutput(
                        training_loss=list(training),
                        validation_loss=list(validation),
                        progress=event.progress,
                    )
                elif isinstance(event, ResultEvent):
                    result = event
            assert result is not None
            self._slot.model = result.model  # loaded even if saving fails: Save Model... works
            self._slot.source = 'training (not saved)'
            try:
                checkpoint.save_model(result.model, target)
            except OSError as exc:
                raise InputError(
                    f'training finished but the model could not be saved to {target} '
                    f'({exc.strerror or exc}); it is loaded, so save it elsewhere with Save '
                    'Model... before closing ptychodus.'
                ) from exc
            self._slot.source = str(target)
            logger.info('Saved the trained model to %s; it is now loaded.', target)
            validation = [LossValue(p, v) for p, v in result.validation_losses]
            yield TrainOutput(
                training_loss=list(training), validation_loss=validation, progress=epochs
            )
        except GeneratorExit:
            logger.info('Training stopped; no model was saved.')
            raise
        except _HANDLED as exc:
            logger.error('Training failed: %s', exc)
            raise
        finally:
            if events is not None:
                events.close()
            self._goal = None


def _model_path(output_path: Path) -> Path:
    if output_path.suffix == checkpoint.EXTENSION:
        return output_path
    return output_path / f'{StandardFileLayout.MODEL_BASENAME}{checkpoint.EXTENSION}'


class PinnReconstructorLibrary(ReconstructorLibrary):
    """Library ``PINN``: keys ``pinn_selfsupervised`` and ``pinn_pretrained``."""

    def __init__(
        self, settings_registry: SettingsRegistry, is_developer_mode_enabled: bool = False
    ) -> None:
        super().__init__(LOGGER_NAME)
        self.settings = PinnSettings(settings_registry)
        self.slot = ModelSlot()
        self.self_supervised = SelfSupervisedReconstructor(self.settings, self.slot)
        self.pretrained = PretrainedReconstructor(self.settings, self.slot)

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def __iter__(self) -> Iterator[Reconstructor]:
        return iter((self.self_supervised, self.pretrained))
