"""The PINN settings panel inside ptychodus's real main window (pytest-qt, offscreen):
it replaces "not found!", its Presets menu fills the fields, its widgets write the [PINN]
settings, and the values round-trip through a settings file and a restart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip('ptychodus')
pytest.importorskip('PyQt5.QtWidgets')
pytest.importorskip('pytestqt')

from _gui_support import ALGORITHM, ROOT, Window, running_ptychodus  # noqa: E402
from PyQt5.QtCore import Qt  # noqa: E402
from PyQt5.QtWidgets import QLabel  # noqa: E402

from ptychodus_ptychopinn.config import PRESETS, resolve_config  # noqa: E402
from ptychodus_ptychopinn.device import available_devices  # noqa: E402
from ptychodus_ptychopinn.plugin.gui import panel as gui  # noqa: E402


@pytest.fixture(scope='module')
def window(qapp: Any) -> Iterator[Window]:
    with running_ptychodus() as window:
        yield window


@pytest.fixture
def settings(window: Window) -> Iterator[Any]:
    """The window's [PINN] settings, restored after each test."""
    settings = window.settings
    saved = {name: p.get_value() for name, p in settings.group.parameters().items()}
    yield settings
    for name, value in saved.items():
        settings.parameter(name).set_value(value)


def _menu_action(panel: Any, name: str) -> Any:
    (action,) = [a for a in panel.presets.presets_menu.actions() if a.data() == name]
    return action


def _shown(widget: Any) -> str:
    """What a field shows: its text, or its placeholder while empty."""
    if hasattr(widget, 'currentText'):
        return str(widget.currentText())
    return str(widget.text() or widget.placeholderText())


def test_pinn_pages_are_our_panel(window: Window, qtbot: Any) -> None:
    factory = window.factory()
    assert factory.name.casefold() == 'pinn'
    assert set(factory.panels) == {'selfsupervised', 'pretrained'}
    assert window.not_found_labels() == []  # built-ins that are not installed add no pages
    window.select_algorithm(ALGORITHM)
    panel = window.panel()
    qtbot.waitUntil(panel.widget.isVisible, timeout=5000)
    assert not window.panel('pretrained').widget.isVisible()
    assert window.actions_view().reconstruct_button.text() == 'Reconstruct'
    # the pretrained page adds its own keys; both pages share the same parameters
    window.select_algorithm('pinn_pretrained')
    qtbot.waitUntil(window.panel('pretrained').widget.isVisible, timeout=5000)
    labels = {w.text() for w in window.panel('pretrained').widget.findChildren(QLabel)}
    assert {'Fine-Tune Epochs:', 'Infer Refine Epochs:', 'Validation Fraction:'} <= labels
    window.select_algorithm(ALGORITHM)


def test_preset_menu_fills_the_fields(window: Window, settings: Any) -> None:
    panel = window.panel()
    fields = panel.fields
    assert [a.data() for a in panel.presets.presets_menu.actions()] == list(PRESETS)
    fields['Epochs'].setValue(7)  # an explicit value, as if typed
    assert settings.parameter('Epochs').get_value() == 7
    before = {key: _shown(widget) for key, widget in fields.items()}

    _menu_action(panel, 'fast').trigger()

    after = {key: _shown(widget) for key, widget in fields.items()}
    assert after != before
    fast = PRESETS['fast']
    assert after['Epochs'] == f'{fast["epochs"]} (fast)'
    assert after['RefineEpochs'] == f'{fast["refine_epochs"]} (fast)'
    assert after['Width'] == f'{fast["width"]} (fast)'
    assert after['LearningRate'] == f'{fast["learning_rate"]:g} (fast)'
    assert after['ProbeRefinement'] == 'on (fast)'
    # the settings hold the preset's name and "unset" for every preset-governed key
    assert settings.preset.get_value() == 'fast'
    assert all(settings.parameter(key).get_value() in (-1, '') for key in gui.preset_keys())
    resolved = settings.resolve()  # what a run would use is what the fields show
    assert resolved.pinn.train.epochs == fast['epochs']
    assert resolved.pinn.model.width == fast['width']

    _menu_action(panel, 'quality').trigger()
    shown = {key: _shown(widget) for key, widget in fields.items()}
    assert shown['Epochs'] == f'{PRESETS["quality"]["epochs"]} (quality)'
    assert shown['ProbeRefinement'] == 'on (quality)'
    assert panel.presets.preset_label.text().startswith('quality:')
    # the other page shows the same values (one set of parameters)
    assert _shown(window.panel('pretrained').fields['Epochs']) == shown['Epochs']


def test_every_preset_key_has_a_field_with_engine_ranges() -> None:
    keys = {spec.key for spec in gui.FIELDS}
    assert set(gui.preset_keys()) <= keys  # picking a preset never resets a hidden key
    for spec in gui.FIELDS:
        if spec.kind == 'switch':
            continue
        field = next(s.field for s in gui.ENGINE_KEYS if s.name == spec.key)
        number = int if spec.kind == 'int' else float
        for value in (spec.minimum, spec.maximum):  # the widget's range runs
            resolve_config('fast', {field: number(value)})


def test_fields_write_the_settings(window: Window, settings: Any) -> None:
    panel = window.panel()
    _menu_action(panel, 'standard').trigger()
    fields = panel.fields
    epochs = fields['Epochs']
    # stepping from "from preset" starts at the preset's value ...
    epochs.stepBy(1)
    assert settings.parameter('Epochs').get_value() == PRESETS['standard']['epochs'] + 1
    assert epochs.text() == str(PRESETS['standard']['epochs'] + 1)
    # ... and stepping below the minimum goes back to it
    epochs.setValue(0)
    epochs.stepBy(-1)
    assert settings.parameter('Epochs').get_value() == -1
    assert epochs.text() == f'{PRESETS["standard"]["epochs"]} (standard)'
    # a batch size of 0 cannot be typed (the engine's minimum is 1)
    batch = fields['BatchSize']
    state, _, _ = batch.validate('0', 1)
    assert state != batch.validate('4', 1)[0]
    fields['Gridsize'].setValue(3)
    assert settings.parameter('Gridsize').get_value() == 3

    rate = fields['LearningRate']
    rate.setText('4e-3')
    rate.editingFinished.emit()
    assert settings.parameter('LearningRate').get_value() == pytest.approx(4e-3)
    rate.clear()
    rate.editingFinished.emit()
    assert settings.parameter('LearningRate').get_value() == -1
    assert rate.placeholderText() == f'{PRESETS["standard"]["learning_rate"]:g} (standard)'

    switch = fields['ProbeRefinement']
    switch.activated.emit(switch.findData('on'))
    assert settings.parameter('ProbeRefinement').get_value() == 'on'
    assert settings.resolve().pinn.train.probe_refinement is True

    # the model drives the view too (Open Settings, the other page)
    settings.parameter('Width').set_value(24)
    assert fields['Width'].text() == '24'
    settings.parameter('ProbeRefinement').set_value('no')
    assert switch.currentText() == 'off'


def test_device_chooser(window: Window, settings: Any) -> None:
    device = window.panel().device
    combo = device.get_widget()
    assert device.devices() == ['auto', *available_devices()]
    assert combo.currentData() == 'auto'
    combo.activated.emit(combo.findData('cpu'))
    assert settings.device.get_value() == 'cpu'
    settings.device.set_value('cuda:7')  # e.g. from a settings file written elsewhere
    assert combo.currentData() == 'cuda:7'
    assert 'not available here' in combo.currentText()
    settings.device.set_value('auto')
    assert combo.count() == len(device.devices())


def test_cpu_threads(window: Window, settings: Any) -> None:
    import torch

    threads = window.panel().threads.get_widget()
    assert threads.text() == f'torch decides ({torch.get_num_threads()})'
    threads.stepBy(1)
    assert settings.parameter('NumThreads').get_value() == torch.get_num_threads() + 1
    threads.setValue(1)
    threads.stepBy(-1)
    assert settings.parameter('NumThreads').get_value() == -1
    settings.parameter('NumThreads').set_value(0)  # 0 from a file: torch decides too
    assert threads.text().startswith('torch decides')


def test_settings_round_trip_through_a_restart(
    window: Window, settings: Any, tmp_path: Path, qtbot: Any
) -> None:
    panel = window.panel()
    window.select_algorithm(ALGORITHM)
    _menu_action(panel, 'quality').trigger()
    fields = panel.fields
    fields['Epochs'].setValue(3)
    fields['BatchSize'].setValue(2)
    fields['RefineLearningRate'].setText('0.07')
    fields['RefineLearningRate'].editingFinished.emit()
    fields['ProbeRefinement'].activated.emit(fields['ProbeRefinement'].findData('off'))
    device = panel.device.get_widget()
    device.activated.emit(device.findData('cpu'))
    panel.threads.get_widget().setValue(1)
    path = tmp_path / 'settings.ini'
    window.model.settings_registry.save_settings(path)  # what Settings > Save does
    text = path.read_text()
    assert '[PINN]' in text and 'Preset = quality' in text and 'Epochs = 3' in text

    with running_ptychodus(path) as restarted:
        assert restarted.model.processing_core.algorithm_parameter.get_value() == ALGORITHM
        again = restarted.panel()
        qtbot.waitUntil(again.widget.isVisible, timeout=5000)
        shown = {key: _shown(widget) for key, widget in again.fields.items()}
        assert shown['Epochs'] == '3' and shown['BatchSize'] == '2'
        assert shown['RefineLearningRate'] == '0.07'
        assert shown['ProbeRefinement'] == 'off'
        quality = PRESETS['quality']
        assert shown['RefineEpochs'] == f'{quality["refine_epochs"]} (quality)'
        assert shown['Width'] == f'{quality["width"]} (quality)'
        assert again.device.get_widget().currentData() == 'cpu'
        assert again.threads.get_widget().text() == '1'
        resolved = restarted.settings.resolve()
        assert (resolved.pinn.train.epochs, resolved.execution.batch_size) == (3, 2)
        assert (resolved.execution.device, resolved.execution.num_threads) == ('cpu', 1)
        assert resolved.pinn.train.probe_refinement is False
        assert resolved.pinn.train.refine_epochs == quality['refine_epochs']


def test_product_updates_and_loss_plots_coalesce(qapp: Any, qtbot: Any) -> None:
    queue: list[Any] = []
    assigned: list[tuple[str, str]] = []

    class Output:
        def __init__(self, product: str) -> None:
            self.product = product

    class UpdateTask:  # ptychodus's UpdateProductTask(product_item, product)()
        def __init__(self, item: str, product: str) -> None:
            self.call = lambda: assigned.append((item, product))

        def __call__(self) -> None:
            self.call()

    updates = gui.CoalescedProductUpdates(queue.append, UpdateTask)
    for product in ('p1', 'p2', 'p3'):  # worker thread: three outputs for one item
        updates('item', Output(product))
    updates('other', Output('q1'))
    assert len(queue) == 2  # one pending task per item
    for task in queue:  # GUI thread: ptychodus's foreground pass
        task()
    assert assigned == [('item', 'p3'), ('other', 'q1')]
    updates('item', Output('p4'))  # a new output after the pass queues a new task
    queue[-1]()
    assert assigned[-1] == ('item', 'p4') and (updates.outputs, updates.assigned) == (5, 3)

    drawn: list[int] = []
    plot = gui.CoalescedLossPlot(drawn.append)
    for index in (0, 3, 3, 3):  # ptychodus: four calls per output
        plot(index)
    assert drawn == []
    qtbot.waitUntil(lambda: drawn == [3], timeout=2000)
    assert (plot.calls, plot.draws) == (4, 1)


def test_a_failing_panel_becomes_a_label(qapp: Any) -> None:
    class BrokenLibrary:
        name = 'PINN'

        @property
        def settings(self) -> Any:
            raise RuntimeError('no settings')

    widget = gui.PinnViewControllerFactory(BrokenLibrary()).create_view_controller('x')
    assert isinstance(widget, QLabel)
    assert 'PINN settings panel failed: RuntimeError: no settings' in widget.text()
    assert widget.alignment() & Qt.AlignmentFlag.AlignCenter


def test_gui_package_and_install_import_no_qt() -> None:
    code = (
        'import sys\n'
        'import ptychodus_ptychopinn.plugin.gui\n'
        'from ptychodus_ptychopinn.plugin import discovery\n'
        'discovery.install()\n'
        "print(sorted(m for m in sys.modules if m.startswith(('PyQt', 'PySide', 'qtpy'))))\n"
        "print('ptychodus.controller.core' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ['[]', 'False']
