"""The settings column: input, preset, device and the main knobs.

A preset fills every field (explicit values win over the preset from then on, as everywhere
in the package); keys without a field (batch sizes, schedule, ...) come from the preset.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..config import DEFAULT_PRESET, GRIDSIZES, PRESETS, resolve_config

RATE_KEYS = ('learning_rate', 'refine_learning_rate', 'probe_learning_rate')


class SettingsPanel(QWidget):
    """Fields for the keys a user changes most; :meth:`overrides` is what a run uses."""

    preset_changed = Signal(str)

    def __init__(self, devices: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.preset = DEFAULT_PRESET
        column = QVBoxLayout(self)

        source = QGroupBox('Input')
        form = QFormLayout(source)
        self.input_label = QLabel('(none: File > Open Scan...)')
        self.input_label.setWordWrap(True)
        self.input_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow('Scan:', self.input_label)
        self.preset_label = QLabel(self.preset)
        form.addRow('Preset:', self.preset_label)
        self.device = QComboBox()
        for name in ['auto', *devices]:
            self.device.addItem(name, name)
        self.device.setToolTip("'auto': the first CUDA GPU, else MPS, else the CPU")
        form.addRow('Device:', self.device)
        column.addWidget(source)

        knobs = QGroupBox('Settings')
        form = QFormLayout(knobs)
        self.epochs = _int_box(0, 100_000, 'network-fit epochs (Train: training epochs)')
        self.refine_epochs = _int_box(0, 100_000, 'direct object refinement epochs')
        self.learning_rate = _rate_box('network learning rate')
        self.refine_learning_rate = _rate_box('object refinement learning rate', high=10.0)
        self.probe_learning_rate = _rate_box('probe learning rate (probe refinement)')
        self.gridsize = QComboBox()
        for value in GRIDSIZES:
            self.gridsize.addItem(f'{value} ({value * value} patterns per group)', value)
        self.gridsize.setToolTip('overlap constraint: 1 disables it')
        self.net_width = _int_box(4, 256, 'network width (channels of the first block)')
        self.probe_refinement = QCheckBox('refine the probe too')
        form.addRow('Epochs:', self.epochs)
        form.addRow('Refine epochs:', self.refine_epochs)
        form.addRow('Learning rate:', self.learning_rate)
        form.addRow('Refine learning rate:', self.refine_learning_rate)
        form.addRow('Probe learning rate:', self.probe_learning_rate)
        form.addRow('Gridsize:', self.gridsize)
        form.addRow('Width:', self.net_width)
        form.addRow('Probe:', self.probe_refinement)
        column.addWidget(knobs)
        column.addStretch(1)
        self.extra: dict[str, Any] = {}
        """Keys without a field (tests, ``--set``): merged into :meth:`overrides`."""
        self.apply_preset(DEFAULT_PRESET)

    def apply_preset(self, name: str) -> None:
        """Fill every field with ``name``'s values (what a run with that preset would use)."""
        config = resolve_config(name)
        train, model = config.pinn.train, config.pinn.model
        self.preset = config.preset
        self.preset_label.setText(config.preset)
        self.epochs.setValue(train.epochs)
        self.refine_epochs.setValue(train.refine_epochs)
        self.learning_rate.setValue(train.learning_rate)
        self.refine_learning_rate.setValue(train.refine_learning_rate)
        self.probe_learning_rate.setValue(train.probe_learning_rate)
        self.gridsize.setCurrentIndex(self.gridsize.findData(model.gridsize))
        self.net_width.setValue(model.width)
        self.probe_refinement.setChecked(train.probe_refinement)
        self.preset_changed.emit(config.preset)

    def set_device(self, name: str) -> None:
        index = self.device.findData(name)
        if index < 0:
            self.device.addItem(f'{name} (not available here)', name)
            index = self.device.count() - 1
        self.device.setCurrentIndex(index)

    def overrides(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            'device': self.device.currentData(),
            'epochs': self.epochs.value(),
            'refine_epochs': self.refine_epochs.value(),
            'learning_rate': self.learning_rate.value(),
            'refine_learning_rate': self.refine_learning_rate.value(),
            'probe_learning_rate': self.probe_learning_rate.value(),
            'gridsize': self.gridsize.currentData(),
            'width': self.net_width.value(),
            'probe_refinement': self.probe_refinement.isChecked(),
        }
        values.update(self.extra)
        return values


def _int_box(low: int, high: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setToolTip(tip)
    return box


def _rate_box(tip: str, high: float = 1.0) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(6)
    box.setRange(1e-6, high)
    box.setSingleStep(1e-4)
    box.setToolTip(tip)
    return box


def preset_names() -> list[str]:
    return list(PRESETS)
