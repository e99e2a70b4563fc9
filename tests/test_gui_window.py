"""Reconstructing from ptychodus's real main window (pytest-qt, offscreen): pick a preset,
press Reconstruct, watch the progress bar and the output object; press Stop; and a 10 ms
QTimer on the GUI thread keeps ticking (longest gap < 0.5 s after the click) during the run.

``PINN_GUI_SCREENSHOTS=docs python -m pytest tests/test_gui_window.py -k sample_data``
also runs the full ``fast`` preset and writes the screenshots used in docs/gui.md.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('ptychodus')
pytest.importorskip('PyQt5.QtWidgets')
pytest.importorskip('pytestqt')

from _gui_support import (  # noqa: E402
    ALGORITHM,
    SAMPLE_DATA,
    TickRecorder,
    Window,
    load_scan,
    running_ptychodus,
)
from PyQt5.QtCore import QPoint, QRect, QSize, Qt  # noqa: E402

from ptychodus_ptychopinn.config import PRESETS  # noqa: E402
from ptychodus_ptychopinn.plugin.gui import panel as gui  # noqa: E402
from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan  # noqa: E402

# The mitigations removed freezes of 1.9-12 s (docs/benchmarks.md); single gaps of 0.2-0.35 s
# (one matplotlib draw of ptychodus's loss plot while the engine holds the other core) come
# and go with this shared VM's load, so the bound sits above them.
MAX_GAP_MS = 500
MAX_PRESS_MS = 1000
SCREENSHOTS = os.environ.get('PINN_GUI_SCREENSHOTS', '')
RUN_TIMEOUT_MS = 600_000


@pytest.fixture(scope='module')
def window(qapp: Any, qtbot_module: Any) -> Iterator[Window]:
    with running_ptychodus() as window:
        panel = window.panel()
        panel.device.get_widget().activated.emit(panel.device.get_widget().findData('cpu'))
        # this test machine's 2 cores are shared: one torch thread (as tests elsewhere do)
        panel.threads.get_widget().setValue(1)
        assert window.settings.parameter('NumThreads').get_value() == 1
        # torch's first optimiser imports torch._dynamo; the panel does that on a thread
        # as soon as the window's event loop runs (a user takes longer than this to click)
        qtbot_module.waitUntil(lambda: gui.wait_for_warm_up(0), timeout=120_000)
        yield window


@pytest.fixture(scope='module')
def qtbot_module(qapp: Any) -> Any:
    from pytestqt.qtbot import QtBot

    return QtBot(qapp)


@pytest.fixture(scope='module')
def tiny_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scan = simulate_scan(pattern_size=32, num_positions=64, photons_per_pattern=1e5, seed=3)
    return save_layout(tmp_path_factory.mktemp('tiny'), scan)


def _object(window: Window, index: int) -> np.ndarray:
    product = window.model.workflow_api.get_product(index).get_product()
    return np.array(product.object_.get_array())


def _prepare(window: Window, directory: Path) -> int:
    """Load a scan, select it as the Processing view's product and select our algorithm."""
    index = load_scan(window, directory)
    name = window.model.workflow_api.get_product(index).get_product().metadata.name
    window.combo_with(name).setCurrentIndex(index)
    window.select_algorithm(ALGORITHM)
    return index


def _pick_preset(window: Window, name: str) -> None:
    panel = window.panel()
    (action,) = [a for a in panel.presets.presets_menu.actions() if a.data() == name]
    action.trigger()


def _press_and_record(window: Window, qtbot: Any) -> tuple[TickRecorder, int]:
    """Press Reconstruct with a 10 ms tick recorder running; returns it and the run count.

    A full garbage collection first: with torch, ptychodus and (here) several windows
    loaded, one generation-2 collection takes 0.2-0.5 s whenever the interpreter decides
    to run it, reconstruction or not. Collecting now keeps that pause out of a
    measurement that is about the reconstruction (docs/benchmarks.md).
    """
    gc.collect()
    recorder = TickRecorder(window.view.processing_status_view.progress_bar)
    runs = window.monitor.get_completed_runs()
    recorder.start()
    button = window.actions_view().reconstruct_button
    assert button.isEnabled() and button.text() == 'Reconstruct'
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.monitor.is_processing, timeout=30_000)
    return recorder, runs


def _wait_until_done(window: Window, qtbot: Any, runs: int, recorder: TickRecorder) -> None:
    qtbot.waitUntil(lambda: window.monitor.get_completed_runs() > runs, timeout=RUN_TIMEOUT_MS)
    # ptychodus applies the last outputs on its 1 s foreground timer; then the bar hides
    bar = window.view.processing_status_view.progress_bar
    qtbot.waitUntil(lambda: not bar.isVisible(), timeout=10_000)
    recorder.stop()
    assert window.monitor.get_last_error() is None, window.monitor.get_last_error()


def _report(name: str, recorder: TickRecorder, **extra: Any) -> None:
    """One JSON line per run (``pytest -s`` shows them; docs/benchmarks.md quotes them)."""
    gaps = sorted(recorder.gaps_ms[1:]) or [0]
    line = {
        'run': name,
        'press_ms': recorder.press_ms,
        'longest_gap_ms': recorder.longest_gap_ms,
        'p99_gap_ms': gaps[int(0.99 * (len(gaps) - 1))],
        'ticks': len(gaps),
        'seconds': round(sum(gaps) / 1000, 1),  # Reconstruct pressed -> bar hidden
        **extra,
    }
    print('GUI-RESPONSIVENESS', json.dumps(line))


def _log_text(window: Window) -> str:
    return str(window.view.processing_status_view.text_edit.toPlainText())


def test_reconstruct_sample_data_from_the_window(window: Window, qtbot: Any) -> None:
    index = _prepare(window, SAMPLE_DATA)
    panel = window.panel()
    assert panel.widget.isVisible()
    epochs = panel.fields['Epochs']
    before = epochs.text()
    _pick_preset(window, 'fast')
    assert epochs.text() == f'{PRESETS["fast"]["epochs"]} (fast)' != before
    if not SCREENSHOTS:
        # one network epoch on sample_data's 300 patterns of 64 x 64 takes 2-10 s on the
        # shared 2-core CPU: run one (explicit), then the preset's refinement epochs
        epochs.setValue(1)
        assert epochs.text() == '1'
        assert panel.fields['RefineEpochs'].text() == f'{PRESETS["fast"]["refine_epochs"]} (fast)'
    reconstructor = window.model.processing_core.algorithm_parameter.get_current_reconstructor()
    expected_goal = reconstructor.get_progress_goal()
    initial = _object(window, index)
    updates = window.monitor.update_product  # the panel's CoalescedProductUpdates
    outputs_before, assigned_before = updates.outputs, updates.assigned

    recorder, runs = _press_and_record(window, qtbot)
    _wait_until_done(window, qtbot, runs, recorder)
    _report('sample_data', recorder, progress=expected_goal)

    # the progress bar moved (ptychodus refreshes it once a second)
    seen = recorder.progress_seen
    assert len(seen) >= 2 and seen == sorted(seen), seen
    assert window.monitor.get_progress() == window.monitor.get_progress_goal() == expected_goal
    # the output product is selected and its object changed
    output = window.combo_with(f'sample_data_{ALGORITHM}').currentIndex()
    assert output != index
    result = _object(window, output)
    assert result.shape == initial.shape
    assert not np.allclose(result, initial)
    assert np.array_equal(_object(window, index), initial)  # the input is untouched
    assert 'SelfSupervised: 300 patterns of 64 x 64' in _log_text(window)  # ours ran
    # every output reached ptychodus; the window assigned fewer (the newest each time)
    assert updates.outputs - outputs_before == expected_goal
    assert 1 <= updates.assigned - assigned_before < expected_goal
    assert recorder.longest_gap_ms < MAX_GAP_MS
    assert recorder.press_ms < MAX_PRESS_MS
    if SCREENSHOTS:
        _screenshots(window, qtbot, output, Path(SCREENSHOTS))


def test_window_stays_responsive_while_the_network_fits(
    window: Window, qtbot: Any, tiny_scan: Path
) -> None:
    _prepare(window, tiny_scan)
    _pick_preset(window, 'fast')
    panel = window.panel()
    panel.fields['Epochs'].setValue(8)
    panel.fields['RefineEpochs'].setValue(8)
    recorder, runs = _press_and_record(window, qtbot)
    _wait_until_done(window, qtbot, runs, recorder)
    _report('tiny_fit', recorder, progress=17)
    assert window.monitor.get_progress() == 8 + 8 + 1
    assert 'fit epoch 8/8' in _log_text(window)
    assert recorder.longest_gap_ms < MAX_GAP_MS
    assert recorder.press_ms < MAX_PRESS_MS


def test_stop_ends_the_run_within_one_epoch(window: Window, qtbot: Any, tiny_scan: Path) -> None:
    _prepare(window, tiny_scan)
    _pick_preset(window, 'fast')
    panel = window.panel()
    panel.fields['Epochs'].setValue(200)
    panel.fields['RefineEpochs'].setValue(0)
    monitor = window.monitor
    recorder, runs = _press_and_record(window, qtbot)
    status = window.view.processing_status_view
    qtbot.waitUntil(lambda: monitor.get_progress() >= 2, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(status.stop_button.isVisible, timeout=10_000)
    goal = monitor.get_progress_goal()
    assert goal == 200 + 0 + 1

    first = monitor.get_progress() + 1  # time one whole epoch, from boundary to boundary
    qtbot.waitUntil(lambda: monitor.get_progress() >= first, timeout=RUN_TIMEOUT_MS)
    epoch_started = time.perf_counter()
    qtbot.waitUntil(lambda: monitor.get_progress() >= first + 1, timeout=RUN_TIMEOUT_MS)
    epoch_seconds = time.perf_counter() - epoch_started

    qtbot.mouseClick(status.stop_button, Qt.MouseButton.LeftButton)
    stopped_at = monitor.get_progress()  # the worker is inside epoch stopped_at + 1 at most
    pressed = time.perf_counter()
    qtbot.waitUntil(lambda: monitor.get_completed_runs() > runs, timeout=RUN_TIMEOUT_MS)
    seconds = time.perf_counter() - pressed
    _wait_until_done(window, qtbot, runs, recorder)

    final = monitor.get_progress()
    assert stopped_at <= final <= stopped_at + 1 < goal  # ended within one epoch
    assert not status.stop_button.isVisible()
    assert f'stopped at {final}/{goal}' in _log_text(window)
    _report(
        'stop',
        recorder,
        stop_to_end_s=round(seconds, 2),
        epoch_s=round(epoch_seconds, 2),
        stopped_at=final,
        goal=goal,
    )
    assert recorder.longest_gap_ms < MAX_GAP_MS
    assert recorder.press_ms < MAX_PRESS_MS


def _screenshots(window: Window, qtbot: Any, output: int, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    view = window.view
    view.processing_action.trigger()
    qtbot.wait(300)
    view.grab().save(str(directory / 'gui_processing.png'))
    panel = window.panel()
    panel.fields['Epochs'].setValue(3)  # one explicit value next to the preset's (grey)
    widget = panel.widget
    widget.grab(QRect(QPoint(0, 0), QSize(widget.width(), widget.sizeHint().height()))).save(
        str(directory / 'gui_panel.png')
    )
    panel.fields['Epochs'].setValue(-1)
    view.object_action.trigger()
    tree = view.object_view.tree_view
    tree.setCurrentIndex(tree.model().index(output, 0))
    ribbon = view.object_image_view.image_ribbon
    ribbon.colormap_group_box.renderer_combo_box.textActivated.emit('Amplitude')
    qtbot.wait(500)
    amplitude = np.abs(_object(window, output)[0])
    h, w = amplitude.shape
    low, high = np.percentile(amplitude[h // 4 : -h // 4, w // 4 : -w // 4], [1, 99])
    engine = window.model.object_visualization_engine  # the scanned centre's range
    engine.set_min_display_value(float(low))
    engine.set_max_display_value(float(high))
    ribbon.image_tools_group_box.home_button.click()  # zoom to fit
    qtbot.wait(1500)
    view.grab().save(str(directory / 'gui_reconstruction.png'))
    view.processing_action.trigger()
