"""PINN Studio's window, offscreen with pytest-qt (PySide6): a `fast` run on sample_data with a
stall probe, Stop within one batch and a second run, saving product/model/PNG, following a
recorded run directory (truncated last line, stall, end), comparing two products, and the
scripted mode in a subprocess."""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('PySide6.QtWidgets')
pytest.importorskip('pyqtgraph')
pytest.importorskip('pytestqt')

from _support import TINY, StallProbe  # noqa: E402
from conftest import ROOT, SAMPLE_DATA  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from ptychodus_ptychopinn.rundir import EVENTS_FILE  # noqa: E402
from ptychodus_ptychopinn.studio.window import StudioWindow  # noqa: E402
from ptychodus_ptychopinn.studio.worker import wait_for_warm_up  # noqa: E402

RUN_TIMEOUT_S = 240.0


def wait_until(predicate: Callable[[], bool], timeout: float = RUN_TIMEOUT_S) -> None:
    """Run the event loop until ``predicate`` holds (module fixtures have no qtbot)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(all_threads=True)  # where a hang sits, in the log
            raise TimeoutError(f'timed out after {timeout} s')
        QTest.qWait(20)


@dataclass
class FastRun:
    window: StudioWindow
    run_dir: Path
    probe: StallProbe
    drawn: list[tuple[int, np.ndarray]] = field(default_factory=list)
    seconds: float = 0.0


@pytest.fixture(scope='module')
def fast_run(qapp: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastRun]:
    """One `fast` run on sample_data (1 fit + 4 refine epochs), recorded to a run directory,
    with a 10 ms stall probe on the GUI thread for its whole duration."""
    window = StudioWindow()
    window.resize(1280, 820)
    window.show()
    run_dir = tmp_path_factory.mktemp('run') / 'rundir'
    result = FastRun(window, run_dir, StallProbe())
    plots = window.plots
    draw = plots._draw_probe  # the last of a frame's drawing steps

    def spy(frame: Any) -> None:  # record what was drawn, as it was drawn
        draw(frame)
        result.drawn.append((frame.progress, plots.amplitude.image.copy()))

    plots._draw_probe = spy  # type: ignore[method-assign]
    window.open_input(SAMPLE_DATA)
    window.preset_actions['fast'].trigger()
    window.settings.epochs.setValue(1)
    window.settings.refine_epochs.setValue(4)
    window.settings.extra.update(TINY)
    window.run_dir = run_dir
    assert wait_for_warm_up(120)
    wait_until(lambda: True, 0.1)
    result.probe.start()
    started = time.perf_counter()
    assert window.start('reconstruct')
    wait_until(lambda: not window.busy)
    result.seconds = time.perf_counter() - started
    result.probe.stop()
    window.run_dir = None
    yield result
    window.close()


def test_fast_run_updates_images_and_losses(fast_run: FastRun) -> None:
    window = fast_run.window
    outcome = window.outcome
    assert outcome is not None and outcome.status == 'finished', window.log.toPlainText()
    assert outcome.goal == 1 + 4 + 1 and outcome.progress == outcome.goal
    # the images changed while the run went on: the flat start, then the network, then refined
    progresses = [p for p, _ in fast_run.drawn]
    assert progresses[0] == 0 and progresses[-1] == outcome.goal and len(set(progresses)) >= 3
    first, last = fast_run.drawn[0][1], fast_run.drawn[-1][1]
    assert first.shape == last.shape and np.ptp(first) < 1e-6 < np.ptp(last)
    # the loss plot: a fit point and a falling refine curve, log axis
    curves = window.plots.curves
    assert set(curves) == {('fit', 'train'), ('refine', 'train')}
    x, y = curves[('refine', 'train')].getData()
    assert list(x) == [3, 4, 5, 6] and y[-1] < y[0]
    assert window.plots.loss_plot.getAxis('left').logMode
    assert window.plots.loss_redraws >= 2
    assert window.progress_bar.value() == window.progress_bar.maximum()
    assert 'device cpu' in window.status_label.text() or 'cuda' in window.status_label.text()
    assert not window.buttons['stop'].isEnabled() and window.buttons['reconstruct'].isEnabled()


def test_gui_never_stalls_during_a_fast_run(fast_run: FastRun) -> None:
    gap = fast_run.probe.longest_gap_ms
    gaps = sorted(fast_run.probe.gaps_ms)
    report = {
        'longest_gap_ms': gap,
        'p99_gap_ms': gaps[int(0.99 * (len(gaps) - 1))],
        'ticks': len(gaps),
        'run_s': round(fast_run.seconds, 2),
        'longest_at_s': round(fast_run.probe.longest_at_s, 2),
        'load_average': [round(x, 1) for x in os.getloadavg()],
    }
    print('STUDIO-GUI-STALL', json.dumps(report))
    assert gap < 100, report


def test_save_product_model_and_png(fast_run: FastRun, tmp_path: Path) -> None:
    from ptychodus.api.io import load_product

    from ptychodus_ptychopinn.checkpoint import load_model
    from ptychodus_ptychopinn.plugin.layout import read_product_arrays

    window = fast_run.window
    assert (
        window.menu_actions['save_product'].isEnabled()
        and window.menu_actions['save_model'].isEnabled()
    )
    outcome = window.outcome
    assert outcome is not None and outcome.object is not None
    path = window.save_product(tmp_path / 'studio.h5')
    arrays = read_product_arrays(path)
    np.testing.assert_allclose(arrays['object'], outcome.object, rtol=1e-6, atol=1e-6)
    assert arrays['losses'].shape == (outcome.goal - 1, 2) and (arrays['losses'][:, 1] > 0).all()
    product = load_product(path)
    assert 'PINN Studio' in product.metadata.comments
    model = load_model(window.save_model(tmp_path / 'studio.safetensors'))
    assert model.config.model.width == 8
    png = window.save_png(tmp_path / 'studio.png')
    assert QImage(str(png)).width() == window.width()


def test_stop_ends_within_one_batch_and_window_runs_again(
    fast_run: FastRun, qtbot: Any, tmp_path: Path
) -> None:
    window = fast_run.window
    window.settings.epochs.setValue(50)  # far longer than the test waits
    window.settings.refine_epochs.setValue(0)
    assert window.start('reconstruct')
    worker = window._worker
    assert worker is not None
    qtbot.waitUntil(lambda: len(worker.batch_times) >= 4, timeout=int(RUN_TIMEOUT_S * 1000))
    assert window.buttons['stop'].isEnabled()
    window.buttons['stop'].click()
    qtbot.waitUntil(lambda: not window.busy, timeout=30_000)
    outcome = window.outcome
    assert outcome is not None and outcome.status == 'stopped'
    assert worker.stop_requested_at is not None and worker.stopped_at is not None
    latency = worker.stopped_at - worker.stop_requested_at
    batch = float(np.median(np.diff(worker.batch_times)))
    print('STUDIO-STOP', json.dumps({'stop_s': round(latency, 3), 'batch_s': round(batch, 3)}))
    assert worker.events_after_stop <= 1  # the batch running when Stop came, nothing more
    assert latency < 2 * batch + 0.5
    assert window.buttons['reconstruct'].isEnabled() and not window.buttons['stop'].isEnabled()

    # the same window runs again: a short refinement-only run
    window.settings.epochs.setValue(0)
    window.settings.refine_epochs.setValue(1)
    assert window.start('reconstruct')
    qtbot.waitUntil(lambda: not window.busy, timeout=int(RUN_TIMEOUT_S * 1000))
    assert window.outcome is not None and window.outcome.status == 'finished'
    assert window.outcome.goal == 2


def test_earlier_runs_are_not_kept_by_the_frozen_collector(fast_run: FastRun) -> None:
    """Each run freezes the collector's view when it starts (docs/studio.md). By now three
    runs have ended; their refinements and run contexts sit in reference cycles (scheduler
    lambdas), which only the collector frees. Frozen uncollected, they would stay for good."""
    import gc

    from ptychodus_ptychopinn.engine.context import RunContext
    from ptychodus_ptychopinn.engine.refine import _Refinement

    gc.collect()  # the last run's own garbage: not frozen, freed here
    gc.unfreeze()
    try:
        kept = [o for o in gc.get_objects() if type(o) in (_Refinement, RunContext)]  # no proxies
    finally:
        gc.freeze()
    assert kept == []


def test_follow_recorded_run_with_truncated_last_line(
    fast_run: FastRun, qtbot: Any, tmp_path: Path
) -> None:
    recorded = tmp_path / 'followed'
    shutil.copytree(fast_run.run_dir, recorded)
    lines = (recorded / EVENTS_FILE).read_text().splitlines(keepends=True)
    kinds = [json.loads(line)['event'] for line in lines]
    assert kinds[0] == 'start' and kinds[-1] == 'result' and 'snapshot' in kinds
    assert kinds.count('epoch') == 5
    last = lines[-1]
    (recorded / EVENTS_FILE).write_text(''.join(lines[:-1]) + last[: len(last) // 2])

    window = StudioWindow()
    window.show()
    assert window.follow(recorded, stall_seconds=1.0)
    qtbot.waitUntil(
        lambda: window.follow_status is not None and window.follow_status.stalled, timeout=20_000
    )
    assert window.busy  # a stall is not an end: it keeps watching
    assert 'stalled' in window.status_label.text()
    assert window.plots.last_frame is not None and window.plots.last_frame.progress == 6
    assert len(window.plots.losses) == 5
    with open(recorded / EVENTS_FILE, 'a') as handle:
        handle.write(last[len(last) // 2 :])
    qtbot.waitUntil(lambda: not window.busy, timeout=20_000)
    assert window.follow_status.state == 'result' and window.follow_status.ended
    assert 'finished' in window.status_label.text()
    assert window.progress_bar.value() == window.progress_bar.maximum()
    window.close()


def test_compare_two_products(fast_run: FastRun, qtbot: Any, tmp_path: Path) -> None:
    product = fast_run.window.save_product(tmp_path / 'a.h5')
    compare = fast_run.window.show_compare()
    compare.set_paths(SAMPLE_DATA / 'truth.h5', product)
    with qtbot.waitSignal(compare.compared, timeout=60_000):
        compare.compare_button.click()
    result = compare.result
    assert result is not None, compare.error
    assert result.aligned and result.pixel_size_m and result.pixel_size_m > 0
    assert 0.0 < result.area_under_curve <= 1.0
    assert result.reference.shape == result.test.shape == result.difference.shape
    assert 'FRC AUC' in compare.summary.text()
    assert compare.images['difference'].image is not None
    # a run directory against a product (the snapshot object, no pixel size)
    with qtbot.waitSignal(compare.compared, timeout=60_000):
        compare.set_paths(fast_run.run_dir, product)
        compare.compare_button.click()
    assert compare.result is not None and not compare.result.aligned, compare.error
    compare.close()


def test_scripted_mode_exits_zero_with_a_screenshot(tmp_path: Path) -> None:
    shot = tmp_path / 'shot.png'
    env = dict(os.environ, QT_QPA_PLATFORM='offscreen', PYTHONPATH=str(ROOT))
    command = [
        sys.executable,
        '-m',
        'ptychodus_ptychopinn.studio',
        '--input',
        str(SAMPLE_DATA),
        '--preset',
        'fast',
        '--epochs',
        '0',
        '--refine-epochs',
        '2',
        '--set',
        'refine_batch_size=100',
        '--run',
        '--screenshot',
        str(shot),
        '--exit-when-done',
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    image = QImage(str(shot)).convertToFormat(QImage.Format.Format_RGB32)
    assert image.width() > 600 and image.height() > 400
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), -1)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50  # not blank


def test_dispose_stops_the_run_and_deletes_the_windows(qapp: Any) -> None:
    """What ``studio --exit-when-done`` does after the event loop: left to PySide's exit
    handler, the window (kept alive by its own signal connections) was deleted piecemeal during
    interpreter finalization, and a pyqtgraph item's destructor crashed the process about every
    other run. ``dispose`` stops a run, waits for its thread and deletes both windows now."""
    from shiboken6 import Shiboken

    from ptychodus_ptychopinn.studio.app import dispose

    window = StudioWindow()
    window.show()
    window.open_input(SAMPLE_DATA)
    window.settings.extra.update(TINY)
    compare = window.show_compare()
    assert window.start('reconstruct')
    thread = window._thread
    assert thread is not None
    dispose(window)  # mid-run: the run stops within one batch, its thread is waited for
    assert not Shiboken.isValid(window) and not Shiboken.isValid(compare)
    assert not Shiboken.isValid(thread)
    assert not any(w is window or w is compare for w in qapp.topLevelWidgets())
    dispose(window)  # a second call is harmless
