"""The PINN settings panel in ptychodus's Processing view (PyQt5, like ptychodus's GUI).

ptychodus builds one settings page per reconstructor from a hard-coded list of
``ReconstructorViewControllerFactory``; a library without one gets a "not found!" label.
:func:`extend_controller` (run by discovery's controller hook when ptychodus imports
``ptychodus.controller.core``) replaces that module's ``ProcessingController`` with a
subclass that appends :class:`PinnViewControllerFactory` for the ProcessingCore that holds
our library. Any failure is one logged line and ptychodus starts with its usual label.

The page (see docs/gui.md): a ``GroupBoxWithPresets`` whose Presets menu selects a preset
and resets the main knobs to "from the preset"; each knob shows the preset's value while
unset (a spin box's special value text, a line edit's placeholder, a combo box's first
entry), so picking a preset visibly changes the fields while the settings file keeps only
``Preset = name``. Editing a field makes it explicit (explicit > preset > default).
Below: the device chooser (``auto`` plus every device torch sees), the CPU thread count
and, for ``pinn_pretrained``, the infer/train-only keys.

Three changes keep the window responsive while a reconstruction runs (docs/gui.md,
docs/benchmarks.md): the Processing view's loss plot is redrawn once per event-loop pass
instead of four times per output (:class:`CoalescedLossPlot`), the window assigns only the
newest of the outputs queued between two of its refreshes (:class:`CoalescedProductUpdates`),
and torch's optimiser machinery is imported in the background when the window opens
(:func:`warm_up_torch`).

Every widget is bound to the ``[PINN]`` parameters with ptychodus's observer pattern, so
both pages, *Open Settings* and the settings file stay in step.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from ptychodus.api.observer import Observable, Observer
from ptychodus.api.parameters import IntegerParameter, Parameter, RealParameter, StringParameter
from ptychodus.controller.parameters import ParameterViewBuilder, ParameterViewController
from ptychodus.controller.processing import ReconstructorViewControllerFactory
from ptychodus.view.widgets import GroupBoxWithPresets
from PyQt5.QtCore import QLocale, Qt, QTimer
from PyQt5.QtGui import QDoubleValidator, QPalette, QValidator
from PyQt5.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ...config import PRESETS, resolve_config
from ...errors import PinnError
from .. import discovery
from ..settings import (
    ENGINE_KEYS,
    FALSE_WORDS,
    TRUE_WORDS,
    UNSET_NUMBER,
    UNSET_TEXT,
    PinnSettings,
)

logger = logging.getLogger(__name__)

PRESETS_TITLE = 'PINN Network and Training'
FROM_PRESET = 'from preset'


@dataclass(frozen=True)
class FieldSpec:
    """One knob of the presets box: its ``[PINN]`` key, label, widget kind and range."""

    key: str
    label: str
    kind: str  # 'int', 'real' or 'switch'
    minimum: float = 0
    maximum: float = 0


FIELDS: tuple[FieldSpec, ...] = (
    # ranges as the engine validates them (config.py), so a value the widget accepts runs
    FieldSpec('Epochs', 'Epochs:', 'int', 0, 100_000),
    FieldSpec('RefineEpochs', 'Refine Epochs:', 'int', 0, 100_000),
    FieldSpec('BatchSize', 'Batch Size:', 'int', 1, 65_536),
    FieldSpec('LearningRate', 'Learning Rate:', 'real', 1e-7, 1.0),
    FieldSpec('RefineLearningRate', 'Refine Learning Rate:', 'real', 1e-6, 10.0),
    FieldSpec('Gridsize', 'Gridsize:', 'int', 1, 3),
    FieldSpec('Width', 'Network Width:', 'int', 4, 256),
    FieldSpec('ProbeRefinement', 'Probe Refinement:', 'switch'),
    FieldSpec('PositionRefinement', 'Position Refinement:', 'switch'),
    FieldSpec('RefineTimeLimit', 'Refine Time Limit (s):', 'real', 0.0, 1e7),
    FieldSpec('PlateauPatience', 'Plateau Patience:', 'int', 0, 100_000),
    FieldSpec('PlateauTolerance', 'Plateau Tolerance:', 'real', 0.0, 1.0),
)
"""The main knobs; every key a preset sets is one of them (tested)."""

_SPECS = {spec.name: spec for spec in ENGINE_KEYS}


def preset_keys() -> tuple[str, ...]:
    """``[PINN]`` keys that some preset sets (what picking a preset resets to unset)."""
    fields = {field for values in PRESETS.values() for field in values}
    return tuple(spec.name for spec in ENGINE_KEYS if spec.field in fields)


def preset_values(preset: str) -> dict[str, Any] | None:
    """Every engine field's value under ``preset`` alone (None for an unknown preset)."""
    try:
        resolved = resolve_config(preset.strip() or None, {}, n=64)
    except PinnError:
        return None
    values: dict[str, Any] = {}
    for part in (resolved.pinn.model, resolved.pinn.train, resolved.execution):
        values.update(asdict(part))
    return values


def apply_preset(settings: PinnSettings, name: str) -> None:
    """Select ``name`` and return every preset-governed key to "from the preset"."""
    settings.preset.set_value(name)
    for key in preset_keys():
        parameter = settings.parameter(key)
        if isinstance(parameter, IntegerParameter):
            parameter.set_value(UNSET_NUMBER)
        elif isinstance(parameter, RealParameter):
            parameter.set_value(float(UNSET_NUMBER))
        else:
            parameter.set_value(UNSET_TEXT)


def describe_preset(name: str) -> str:
    values = PRESETS[name]
    parts = [
        f'{values.get("epochs", "?")} fit + {values.get("refine_epochs", "?")} refine epochs',
        f'width {values.get("width", "?")}',
        f'batch {values.get("batch_size", "?")}',
    ]
    if values.get('probe_refinement'):
        parts.append('probe refinement')
    if values.get('position_refinement'):
        parts.append('position refinement')
    return ', '.join(parts)


def _show_as_unset(widget: QWidget, unset: bool) -> None:
    """Grey text (the placeholder colour) while a field shows the preset's value."""
    palette = widget.palette()
    default = QPalette()
    grey = default.color(QPalette.ColorRole.PlaceholderText)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(role, grey if unset else default.color(role))
    widget.setPalette(palette)


def _number_text(value: Any) -> str:
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


# -- widgets bound to parameters -------------------------------------------------------------


class _BoundController(ParameterViewController, Observer):
    """Observes its parameter and the ``Preset`` parameter; stops when its widget goes."""

    def __init__(self, parameter: Parameter[Any], preset: StringParameter, key: str) -> None:
        super().__init__()
        self._parameter = parameter
        self._preset = preset
        self._field = _SPECS[key].field if key in _SPECS else ''
        self._key = key

    def _bind(self, widget: QWidget, tool_tip: str) -> None:
        widget.setToolTip(tool_tip)
        self._sync()
        self._parameter.add_observer(self)
        self._preset.add_observer(self)
        widget.destroyed.connect(self._detach)

    def _detach(self, *_: Any) -> None:
        self._parameter.remove_observer(self)
        self._preset.remove_observer(self)

    def preset_value(self) -> Any:
        values = preset_values(self._preset.get_value())
        return None if values is None else values.get(self._field)

    def preset_text(self) -> str:
        """What an unset field shows: the preset's value and the preset's name."""
        value = self.preset_value()
        if value is None:
            return FROM_PRESET
        return f'{_number_text(value)} ({self._preset.get_value().strip().casefold()})'

    def _sync(self) -> None:
        raise NotImplementedError

    def _update(self, observable: Observable) -> None:
        if observable is self._parameter or observable is self._preset:
            self._sync()


class PresetSpinBox(QSpinBox):
    """A spin box whose lowest value (-1) means "from the preset" and shows its value.

    Stepping from that value starts at the preset's value; stepping below the real minimum
    returns to it; typed values between the two are not accepted.
    """

    def __init__(self, minimum: int, maximum: int) -> None:
        super().__init__()
        self.real_minimum = minimum
        self.preset_value: int | None = None
        self.setRange(UNSET_NUMBER, maximum)
        self.setSpecialValueText(FROM_PRESET)
        self.valueChanged.connect(self.restyle)

    def restyle(self, *_: Any) -> None:
        _show_as_unset(self, self.is_unset())

    def is_unset(self) -> bool:
        return self.value() == self.minimum()

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt)
        if self.is_unset():
            start = self.real_minimum if self.preset_value is None else self.preset_value
            self.setValue(min(max(start + steps, self.real_minimum), self.maximum()))
        elif self.value() + steps < self.real_minimum:
            self.setValue(self.minimum())
        else:
            super().stepBy(steps)

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabled:  # noqa: N802 (Qt)
        if self.is_unset():
            flags = QAbstractSpinBox.StepEnabledFlag
            return QAbstractSpinBox.StepEnabled(flags.StepUpEnabled) | flags.StepDownEnabled
        return super().stepEnabled()

    def validate(self, text: str | None, pos: int) -> tuple[QValidator.State, str, int]:
        state, text, pos = super().validate(text, pos)
        acceptable = state == QValidator.State.Acceptable
        if acceptable and text and text != self.specialValueText():
            value = self.valueFromText(text)
            if self.minimum() < value < self.real_minimum:
                state = QValidator.State.Intermediate
        return state, text or '', pos


class PresetSpinBoxViewController(_BoundController):
    def __init__(
        self, parameter: IntegerParameter, preset: StringParameter, spec: FieldSpec
    ) -> None:
        super().__init__(parameter, preset, spec.key)
        self._widget = PresetSpinBox(int(spec.minimum), int(spec.maximum))
        self._widget.valueChanged.connect(parameter.set_value)
        self._bind(self._widget, _tool_tip(spec, f'{int(spec.minimum)} to {int(spec.maximum)}'))

    def get_widget(self) -> PresetSpinBox:
        return self._widget

    def _sync(self) -> None:
        value = self._parameter.get_value()
        preset = self.preset_value()
        self._widget.blockSignals(True)
        self._widget.preset_value = preset if isinstance(preset, int) else None
        self._widget.setSpecialValueText(self.preset_text())
        self._widget.setValue(value if value >= 0 else UNSET_NUMBER)
        self._widget.blockSignals(False)
        self._widget.restyle()


class PresetLineEditViewController(_BoundController):
    """A number field (learning rates): empty means "from the preset" (shown greyed)."""

    def __init__(self, parameter: RealParameter, preset: StringParameter, spec: FieldSpec) -> None:
        super().__init__(parameter, preset, spec.key)
        self._widget = QLineEdit()
        validator = QDoubleValidator(0.0, spec.maximum, 12, self._widget)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        validator.setLocale(QLocale.c())  # '1e-3' and '0.001', never a decimal comma
        self._widget.setValidator(validator)
        self._widget.setClearButtonEnabled(True)
        self._widget.editingFinished.connect(self._sync_view_to_model)
        self._bind(self._widget, _tool_tip(spec, f'{spec.minimum:g} to {spec.maximum:g}'))

    def get_widget(self) -> QLineEdit:
        return self._widget

    def _sync_view_to_model(self) -> None:
        text = self._widget.text().strip()
        try:
            value = float(text) if text else float(UNSET_NUMBER)
        except ValueError:
            logger.warning('[PINN] %s: %r is not a number.', self._key, text)
        else:
            self._parameter.set_value(value)
        self._sync()

    def _sync(self) -> None:
        value = self._parameter.get_value()
        text = '' if value < 0 else f'{value:g}'
        if self._widget.text().strip() != text:
            self._widget.setText(text)
        self._widget.setPlaceholderText(self.preset_text())


class PresetSwitchViewController(_BoundController):
    """An on/off key with a "from the preset" state: a combo box ``[preset, on, off]``."""

    def __init__(
        self, parameter: StringParameter, preset: StringParameter, spec: FieldSpec
    ) -> None:
        super().__init__(parameter, preset, spec.key)
        self._widget = QComboBox()
        self._widget.addItem(FROM_PRESET, UNSET_TEXT)
        self._widget.addItem('on', 'on')
        self._widget.addItem('off', 'off')
        self._widget.activated.connect(self._sync_view_to_model)
        self._bind(self._widget, _tool_tip(spec, 'on or off'))

    def get_widget(self) -> QComboBox:
        return self._widget

    def _sync_view_to_model(self, index: int) -> None:
        self._parameter.set_value(self._widget.itemData(index))

    def _sync(self) -> None:
        text = str(self._parameter.get_value()).strip().casefold()
        if text in TRUE_WORDS:
            text = 'on'
        elif text in FALSE_WORDS:
            text = 'off'
        self._widget.blockSignals(True)
        self._widget.setItemText(0, self.preset_text())
        while self._widget.count() > 3:  # a value that is neither on nor off (from a file)
            self._widget.removeItem(3)
        index = self._widget.findData(text)
        if index < 0:
            self._widget.addItem(f'{text} (invalid)', text)
            index = 3
        self._widget.setCurrentIndex(index)
        self._widget.blockSignals(False)
        _show_as_unset(self._widget, index == 0)


def _tool_tip(spec: FieldSpec, allowed: str) -> str:
    return (
        f'[PINN] {spec.key}: {_SPECS[spec.key].help} ({allowed}). While unset it shows the '
        "preset's value in brackets; Presets resets it."
    )


class DeviceViewController(ParameterViewController, Observer):
    """``auto`` plus every device torch sees; a value from a file that torch cannot see is
    listed as such (running then fails with a message naming the key)."""

    def __init__(self, parameter: StringParameter) -> None:
        super().__init__()
        from ...device import auto_device, available_devices, describe_device

        self._parameter = parameter
        self._widget = QComboBox()
        self._widget.addItem(f'auto ({auto_device()})', 'auto')
        for name in available_devices():
            self._widget.addItem(describe_device(name) if name != 'cpu' else 'cpu', name)
        self._fixed = self._widget.count()
        self._widget.setToolTip(
            '[PINN] Device: auto picks the first CUDA GPU, else MPS, else the CPU. '
            'A device torch cannot see is an error, never a fallback.'
        )
        self._widget.activated.connect(self._sync_view_to_model)
        self._sync()
        parameter.add_observer(self)
        self._widget.destroyed.connect(lambda *_: parameter.remove_observer(self))

    def get_widget(self) -> QComboBox:
        return self._widget

    def devices(self) -> list[str]:
        return [self._widget.itemData(i) for i in range(self._fixed)]

    def _sync_view_to_model(self, index: int) -> None:
        self._parameter.set_value(self._widget.itemData(index))

    def _sync(self) -> None:
        from ...device import resolve_device

        value = self._parameter.get_value().strip().casefold() or 'auto'
        self._widget.blockSignals(True)
        while self._widget.count() > self._fixed:
            self._widget.removeItem(self._fixed)
        index = self._widget.findData(value)
        if index < 0:
            try:
                label = f'{value} (= {resolve_device(value)})'
            except PinnError:
                label = f'{value} (not available here)'
            self._widget.addItem(label, value)
            index = self._fixed
        self._widget.setCurrentIndex(index)
        self._widget.blockSignals(False)

    def _update(self, observable: Observable) -> None:
        if observable is self._parameter:
            self._sync()


class ThreadsViewController(ParameterViewController, Observer):
    """``NumThreads``: unset (-1, like 0) lets torch decide, which the field shows."""

    def __init__(self, parameter: IntegerParameter) -> None:
        super().__init__()
        import torch

        self._parameter = parameter
        self._widget = PresetSpinBox(1, 1024)
        self._widget.preset_value = torch.get_num_threads()
        self._widget.setSpecialValueText(f'torch decides ({torch.get_num_threads()})')
        self._widget.setToolTip(
            '[PINN] NumThreads: CPU threads for torch (unset: torch decides). On a machine '
            'with few cores, one less than the core count keeps the window smoothest.'
        )
        self._widget.valueChanged.connect(parameter.set_value)
        self._sync()
        parameter.add_observer(self)
        self._widget.destroyed.connect(lambda *_: parameter.remove_observer(self))

    def get_widget(self) -> PresetSpinBox:
        return self._widget

    def _sync(self) -> None:
        value = self._parameter.get_value()
        self._widget.blockSignals(True)
        self._widget.setValue(value if value > 0 else UNSET_NUMBER)
        self._widget.blockSignals(False)
        self._widget.restyle()

    def _update(self, observable: Observable) -> None:
        if observable is self._parameter:
            self._sync()


class PresetsViewController(ParameterViewController, Observer):
    """ptychodus's ``GroupBoxWithPresets``: the Presets menu and the main knobs."""

    def __init__(self, settings: PinnSettings) -> None:
        super().__init__()
        self._settings = settings
        self._widget = GroupBoxWithPresets(PRESETS_TITLE)
        menu = self._widget.presets_menu
        menu.setToolTipsVisible(True)
        for name in PRESETS:
            action = menu.addAction(name)
            assert action is not None
            action.setData(name)
            action.setToolTip(describe_preset(name))
            action.triggered.connect(lambda _=False, name=name: self.apply_preset(name))
        self.preset_label = QLabel()
        self.preset_label.setTextFormat(Qt.TextFormat.PlainText)
        self.fields: dict[str, _BoundController] = {}
        layout = QFormLayout()
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addRow('Preset:', self.preset_label)
        for spec in FIELDS:
            controller = _field_controller(settings, spec)
            self.fields[spec.key] = controller
            layout.addRow(spec.label, controller.get_widget())
        self._widget.contents.setLayout(layout)
        self._sync()
        settings.preset.add_observer(self)
        self._widget.destroyed.connect(lambda *_: settings.preset.remove_observer(self))

    @property
    def presets_menu(self) -> Any:
        return self._widget.presets_menu

    def get_widget(self) -> GroupBoxWithPresets:
        return self._widget

    def apply_preset(self, name: str) -> None:
        apply_preset(self._settings, name)
        logger.info('PINN preset %s: %s.', name, describe_preset(name))

    def _sync(self) -> None:
        name = self._settings.preset.get_value().strip().casefold()
        if preset_values(name) is None:
            self.preset_label.setText(f'{name!r} is not a preset; choose one under Presets')
        else:
            self.preset_label.setText(f'{name}: {describe_preset(name)}')

    def _update(self, observable: Observable) -> None:
        if observable is self._settings.preset:
            self._sync()


def _field_controller(settings: PinnSettings, spec: FieldSpec) -> _BoundController:
    parameter = settings.parameter(spec.key)
    if spec.kind == 'int':
        assert isinstance(parameter, IntegerParameter)
        return PresetSpinBoxViewController(parameter, settings.preset, spec)
    if spec.kind == 'real':
        assert isinstance(parameter, RealParameter)
        return PresetLineEditViewController(parameter, settings.preset, spec)
    assert isinstance(parameter, StringParameter)
    return PresetSwitchViewController(parameter, settings.preset, spec)


# -- the page and its factory ----------------------------------------------------------------


class PinnPanel:
    """The settings page of one PINN reconstructor (``widget`` goes into ptychodus)."""

    def __init__(self, settings: PinnSettings, reconstructor_name: str) -> None:
        self.reconstructor_name = reconstructor_name
        self.presets = PresetsViewController(settings)
        self.device = DeviceViewController(settings.device)
        threads = settings.parameter('NumThreads')
        assert isinstance(threads, IntegerParameter)
        self.threads = ThreadsViewController(threads)
        builder = ParameterViewBuilder()
        builder.add_view_controller_to_top(self.presets)
        builder.add_view_controller(self.device, 'Device:', group='Execution')
        builder.add_view_controller(self.threads, 'CPU Threads:', group='Execution')
        if reconstructor_name.casefold() == 'pretrained':
            builder.add_spin_box(
                settings.fine_tune_epochs,
                'Fine-Tune Epochs:',
                tool_tip='[PINN] FineTuneEpochs: network-fit epochs on the scan before Infer',
                group='Infer and Train',
            )
            builder.add_spin_box(
                settings.infer_refine_epochs,
                'Infer Refine Epochs:',
                tool_tip='[PINN] InferRefineEpochs: object refinement epochs after Infer',
                group='Infer and Train',
            )
            builder.add_decimal_line_edit(
                settings.validation_fraction,
                'Validation Fraction:',
                tool_tip='[PINN] ValidationFraction: share of scan points Train holds out',
                group='Infer and Train',
            )
            builder.add_decimal_line_edit(
                settings.pretrain_minutes,
                'Pretrain Minutes:',
                tool_tip='[PINN] PretrainMinutes: with no model loaded, Reconstruct first '
                "pretrains one for this product's probe on simulated objects (0: off)",
                group='Infer and Train',
            )
        self.widget = builder.build_widget()
        self.widget.setObjectName(f'pinn_{reconstructor_name.casefold()}_panel')

    @property
    def fields(self) -> dict[str, Any]:
        """``[PINN]`` key -> its widget (spin box, line edit or combo box)."""
        return {key: vc.get_widget() for key, vc in self.presets.fields.items()}


class PinnViewControllerFactory(ReconstructorViewControllerFactory):
    """Builds our page for each PINN reconstructor (``ptychodus`` matches ``name``)."""

    def __init__(self, library: Any) -> None:
        super().__init__()
        self._library = library
        self.panels: dict[str, PinnPanel] = {}
        schedule_warm_up()

    @property
    def name(self) -> str:
        return str(self._library.name)

    def create_view_controller(self, reconstructor_name: str) -> QWidget:
        try:
            panel = PinnPanel(self._library.settings, reconstructor_name)
        except Exception as exc:  # never stop ptychodus's window from opening
            logger.error('PINN settings panel failed: %s: %s', type(exc).__name__, exc)
            logger.debug('PINN settings panel failed', exc_info=True)
            label = QLabel(f'PINN settings panel failed: {type(exc).__name__}: {exc}')
            label.setWordWrap(True)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            return label
        self.panels[reconstructor_name.casefold()] = panel
        return panel.widget


_FACTORIES: weakref.WeakKeyDictionary[Any, PinnViewControllerFactory] = weakref.WeakKeyDictionary()


def factory_for(algorithm_parameter: Any) -> PinnViewControllerFactory | None:
    """Our factory in the window whose ProcessingCore owns ``algorithm_parameter``."""
    return _FACTORIES.get(algorithm_parameter)


# -- hooking into ptychodus's controller -----------------------------------------------------


def extend_controller(module: ModuleType) -> None:
    """Replace ``module.ProcessingController`` with a subclass that adds our factory."""
    base = module.ProcessingController
    if getattr(base, '_pinn_wrapped', False):
        return
    module.ProcessingController = _wrap_processing_controller(base)  # type: ignore[attr-defined]


def _wrap_processing_controller(base: type) -> type:
    signature = inspect.signature(base)  # __init__'s parameters without self

    class ProcessingControllerWithPINN(base):  # type: ignore[valid-type, misc]
        """ptychodus's ProcessingController with the PINN settings pages."""

        _pinn_wrapped = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                args, kwargs = _with_pinn_factory(signature, args, kwargs)
            except Exception as exc:  # ptychodus shows "not found!" instead
                logger.error('PINN settings panel unavailable: %s: %s', type(exc).__name__, exc)
                logger.debug('PINN settings panel unavailable', exc_info=True)
            super().__init__(*args, **kwargs)
            try:
                coalesce_loss_plots(self)
                coalesce_product_updates(getattr(self, '_processing_api', None))
            except Exception as exc:  # optimisations only
                logger.debug('GUI coalescing unavailable: %s', exc, exc_info=True)

    ProcessingControllerWithPINN.__qualname__ = base.__qualname__
    return ProcessingControllerWithPINN


def _with_pinn_factory(
    signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    bound = signature.bind(*args, **kwargs)
    algorithm_parameter = bound.arguments['algorithm_parameter']
    library = discovery.library_for(algorithm_parameter)
    if library is None:  # a ProcessingCore without our library
        return tuple(args), kwargs
    factory = PinnViewControllerFactory(library)
    factories = list(bound.arguments['view_controller_factories'])
    bound.arguments['view_controller_factories'] = [*factories, factory]
    _FACTORIES[algorithm_parameter] = factory
    return tuple(bound.args), dict(bound.kwargs)


# -- ptychodus's loss plot ------------------------------------------------------------------


class CoalescedLossPlot:
    """Stands in for ``ProcessingStatusController.plot_losses``: one redraw per event-loop
    pass instead of one per call.

    For every ``ReconstructOutput`` ptychodus assigns the product part by part, and each
    part clears the losses, so the loss plot is redrawn four times per output, each a
    full synchronous matplotlib draw on the GUI thread (~0.1 s on an idle 2-core CPU,
    several times that while the reconstruction keeps the cores busy). Deferring to a
    zero-delay single-shot timer collapses all calls of one foreground-task pass into one
    draw of the latest state; nothing is lost, the last call always draws.
    """

    def __init__(self, plot: Any) -> None:
        self._plot = plot
        self._index = -1
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        self.calls = 0
        self.draws = 0

    def __call__(self, product_index: int) -> None:
        self.calls += 1
        self._index = product_index
        if not self._timer.isActive():
            self._timer.start(0)

    def flush(self) -> None:
        self._timer.stop()
        self.draws += 1
        self._plot(self._index)


def coalesce_loss_plots(processing_controller: Any) -> None:
    """Install :class:`CoalescedLossPlot` on ptychodus's Processing status controller
    (its product combo box looks ``plot_losses`` up on every losses change)."""
    status = getattr(processing_controller, '_status_controller', None)
    plot = getattr(status, 'plot_losses', None)
    if plot is None or isinstance(plot, CoalescedLossPlot):
        return
    status.plot_losses = CoalescedLossPlot(plot)  # type: ignore[union-attr]


class CoalescedProductUpdates:
    """Stands in for ``ProcessingTaskMonitor.update_product`` (called on the worker thread
    for every ``ReconstructOutput``): at most one pending GUI update per output product.

    ptychodus queues one foreground task per output and runs the queue on a 1 s timer,
    so a reconstructor that yields every 50 ms (short refinement epochs) made the GUI
    thread assign 20 products back to back, each refreshing several views. Here the
    first output queues one task and later ones only replace the product it will assign;
    the task assigns the newest product (with ptychodus's own ``UpdateProductTask``) when
    it runs. Progress, Stop and the outputs the reconstructor yields are unchanged; only
    intermediate states the window would have shown for a few milliseconds are skipped.
    """

    def __init__(self, put_foreground_task: Any, update_task: Any) -> None:
        self._put = put_foreground_task
        self._update_task = update_task
        self._lock = threading.Lock()
        self._pending: dict[int, Any] = {}
        self.outputs = 0
        self.assigned = 0

    def __call__(self, product_item: Any, result: Any) -> None:
        with self._lock:
            self.outputs += 1
            queued = id(product_item) in self._pending
            self._pending[id(product_item)] = result.product
        if not queued:
            self._put(lambda: self._assign_latest(product_item))

    def _assign_latest(self, product_item: Any) -> None:
        with self._lock:
            product = self._pending.pop(id(product_item))
            self.assigned += 1
        self._update_task(product_item, product)()


def coalesce_product_updates(processing_api: Any) -> None:
    """Install :class:`CoalescedProductUpdates` on the window's processing task monitor."""
    from ptychodus.model.processing.monitor import UpdateProductTask

    monitor: Any = getattr(processing_api, 'task_monitor', None)
    manager = getattr(monitor, '_foreground_task_manager', None)
    put = getattr(manager, 'put_foreground_task', None)
    if put is None or isinstance(monitor.update_product, CoalescedProductUpdates):
        return
    monitor.update_product = CoalescedProductUpdates(put, UpdateProductTask)


# -- torch warm-up ---------------------------------------------------------------------------

_WARM_UP_DONE = threading.Event()
_warm_up_lock = threading.Lock()
_warm_up_started = False


def schedule_warm_up() -> None:
    """Once the event loop runs, import torch's lazily loaded optimiser machinery on a
    background thread (see :func:`warm_up_torch`)."""
    QTimer.singleShot(0, start_warm_up)


def start_warm_up() -> None:
    global _warm_up_started
    with _warm_up_lock:
        if _warm_up_started:
            return
        _warm_up_started = True
    threading.Thread(target=warm_up_torch, name='pinn-torch-warm-up', daemon=True).start()


def warm_up_torch() -> None:
    """Build and step a one-parameter Adam optimiser and the refinement's optimiser once.

    The first ``torch.optim`` optimiser in a process imports ``torch._dynamo`` (about
    1-2 s), whose allocations trigger full garbage collections of the loaded process
    (0.2-0.5 s each, holding the GIL); on ptychodus's worker thread that froze the window
    at the start of the first reconstruction. Done here, while the freshly opened window
    is idle, the first run starts as smoothly as later ones.
    """
    try:
        import torch

        from ...engine.refine import PreconditionedDescent

        parameter = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.Adam([parameter], lr=1e-3)
        parameter.square().sum().backward()
        optimizer.step()
        # the refinement's path: complex autograd through FFTs, its optimiser and schedule
        image = torch.ones(4, 4, dtype=torch.complex64, requires_grad=True)
        descent = PreconditionedDescent([{'params': [image], 'lr': 1.0}])
        descent.preconditioners[image] = torch.ones(4, 4)
        schedule = torch.optim.lr_scheduler.LambdaLR(descent, [lambda step: 1.0])
        torch.fft.fft2(image).abs().square().sum().backward()
        descent.step()
        schedule.step()
    except Exception:  # only a warm-up: the run itself reports real problems
        logger.debug('torch warm-up failed', exc_info=True)
    finally:
        _WARM_UP_DONE.set()


def wait_for_warm_up(timeout: float | None = None) -> bool:
    """True once the warm-up finished (tests; a run started earlier simply waits for it)."""
    return _WARM_UP_DONE.wait(timeout)
