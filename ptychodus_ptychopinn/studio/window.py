"""PINN Studio's main window: settings on the left, the live view in the middle, progress and
the log below. Runs and followed runs happen on worker threads (:mod:`.worker`,
:mod:`.follow`); the GUI thread only places prepared arrays and text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QThread, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..config import PRESETS
from .compare import CompareWindow
from .follow import FollowWorker
from .plots import LivePlots
from .settings import SettingsPanel
from .worker import Job, Outcome, Worker, start_warm_up

PROGRESS_STEPS = 1000


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return '--:--'
    minutes, secs = divmod(int(round(seconds)), 60)
    return f'{minutes:02d}:{secs:02d}'


class StudioWindow(QMainWindow):
    """The whole application; tests drive it through its methods and widgets."""

    run_finished = Signal(object)
    """An :class:`.worker.Outcome`, or a :class:`~ptychodus_ptychopinn.rundir.RunStatus`
    when a followed run ended."""

    def __init__(self, devices: list[str] | None = None) -> None:
        super().__init__()
        if devices is None:
            from ..device import available_devices

            devices = available_devices()
        self.setWindowTitle(f'PINN Studio {__version__}')
        self.resize(1280, 820)
        self.input_path: Path | None = None
        self.run_dir: Path | None = None
        self.outcome: Outcome | None = None
        self.follow_status: Any = None
        self._thread: QThread | None = None
        self._worker: Worker | FollowWorker | None = None
        self.last_worker: Worker | FollowWorker | None = None
        self.compare_window: CompareWindow | None = None

        self.settings = SettingsPanel(devices)
        self.plots = LivePlots()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, PROGRESS_STEPS)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat('idle')
        self.status_label = QLabel('open a scan (File > Open Scan...) or follow a run')
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setMaximumHeight(130)

        self.buttons: dict[str, QPushButton] = {}
        button_row = QHBoxLayout()
        for key, text in (
            ('reconstruct', 'Reconstruct'),
            ('infer', 'Infer...'),
            ('train', 'Train'),
            ('stop', 'Stop'),
        ):
            button = QPushButton(text)
            self.buttons[key] = button
            button_row.addWidget(button)
        self.buttons['reconstruct'].clicked.connect(lambda: self.start('reconstruct'))
        self.buttons['infer'].clicked.connect(self.infer_with_dialog)
        self.buttons['train'].clicked.connect(lambda: self.start('train'))
        self.buttons['stop'].clicked.connect(self.stop)
        left = QWidget()
        left_column = QVBoxLayout(left)
        left_column.setContentsMargins(0, 0, 0, 0)
        left_column.addWidget(self.settings, 1)
        left_column.addLayout(button_row)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.plots)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([300, 980])
        central = QWidget()
        column = QVBoxLayout(central)
        column.addWidget(splitter, 1)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress_bar, 2)
        progress_row.addWidget(self.status_label, 1)
        column.addLayout(progress_row)
        column.addWidget(self.log)
        self.setCentralWidget(central)
        self._build_menus()
        self._update_actions()
        start_warm_up()

    # -- menus ----------------------------------------------------------------------------

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu('&File')
        self.menu_actions: dict[str, QAction] = {}

        def add(menu: Any, key: str, text: str, slot: Any, shortcut: str | None = None) -> None:
            action = QAction(text, self)
            action.triggered.connect(slot)
            if shortcut:
                action.setShortcut(QKeySequence(shortcut))
            menu.addAction(action)
            self.menu_actions[key] = action

        add(file_menu, 'open', 'Open Scan Directory...', self._open_dir_dialog, 'Ctrl+O')
        add(file_menu, 'open_training', 'Open Training Data File...', self._open_file_dialog)
        file_menu.addSeparator()
        add(file_menu, 'save_product', 'Save Product...', self._save_product_dialog, 'Ctrl+S')
        add(file_menu, 'save_model', 'Save Model...', self._save_model_dialog)
        add(file_menu, 'save_png', 'Save Window as PNG...', self._save_png_dialog)
        file_menu.addSeparator()
        add(file_menu, 'follow', 'Follow Run Directory...', self._follow_dialog)
        add(file_menu, 'compare', 'Compare...', self.show_compare)
        file_menu.addSeparator()
        add(file_menu, 'quit', 'Quit', self.close, 'Ctrl+Q')

        presets = bar.addMenu('&Presets')
        self.preset_actions: dict[str, QAction] = {}
        for name in PRESETS:
            action = QAction(name, self)
            action.triggered.connect(lambda _=False, n=name: self.settings.apply_preset(n))
            presets.addAction(action)
            self.preset_actions[name] = action

        run = bar.addMenu('&Run')
        add(run, 'reconstruct', 'Reconstruct', lambda: self.start('reconstruct'), 'Ctrl+R')
        add(run, 'infer', 'Infer with Model...', self.infer_with_dialog)
        add(run, 'train', 'Train', lambda: self.start('train'))
        add(run, 'stop', 'Stop', self.stop, 'Esc')

    def _update_actions(self) -> None:
        busy = self.busy
        have_input = self.input_path is not None
        outcome = self.outcome
        for key in ('reconstruct', 'infer', 'train'):
            self.buttons[key].setEnabled(not busy and have_input)
            self.menu_actions[key].setEnabled(not busy and have_input)
        self.buttons['stop'].setEnabled(busy)
        self.menu_actions['stop'].setEnabled(busy)
        can_product = (
            not busy
            and outcome is not None
            and outcome.object is not None
            and outcome.parameters is not None
            and outcome.job.action != 'train'
        )
        self.menu_actions['save_product'].setEnabled(can_product)
        self.menu_actions['save_model'].setEnabled(
            not busy and outcome is not None and outcome.model is not None
        )

    # -- input ----------------------------------------------------------------------------

    def open_input(self, path: str | Path) -> None:
        """A layout directory (diffraction.h5 + product.h5) or an exported training file; the
        files are read when a run starts, on the worker thread."""
        source = Path(path)
        if source.is_dir():
            from ..plugin.layout import check_layout

            check_layout(source)
            kind = 'scan directory'
        elif source.is_file():
            kind = 'training-data file'
        else:
            raise FileNotFoundError(f'{source} does not exist')
        self.input_path = source
        self.settings.input_label.setText(str(source))
        self.append_log(f'opened {kind} {source}')
        self.status_label.setText('ready: Reconstruct, Infer or Train')
        self._update_actions()

    def _open_dir_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, 'Scan directory (diffraction.h5 + product.h5)'
        )
        if path:
            self._try(lambda: self.open_input(path))

    def _open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, 'Training data exported by ptychodus', '', 'HDF5 (*.h5 *.hdf5)'
        )
        if path:
            self._try(lambda: self.open_input(path))

    def _try(self, action: Any) -> bool:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a message in the log, not a crash
            self.append_log(f'error: {exc}')
            self.status_label.setText(str(exc))
            return False
        return True

    # -- runs -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, action: str = 'reconstruct', model_path: str | Path | None = None) -> bool:
        """Start a run of ``action`` on the open input; False when busy or nothing is open."""
        if self.busy or self.input_path is None:
            return False
        job = Job(
            action=action,
            input=self.input_path,
            preset=self.settings.preset,
            overrides=self.settings.overrides(),
            model_path=None if model_path is None else Path(model_path),
            run_dir=self.run_dir,
        )
        self.outcome = None
        self.plots.clear()
        self.append_log(f'--- {action} ({job.preset})')
        self._launch(Worker(job))
        return True

    def infer_with_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, 'PINN model', '', 'PINN models (*.safetensors)')
        if path:
            self.start('infer', path)

    def follow(self, directory: str | Path, stall_seconds: float | None = None) -> bool:
        """Watch a run directory written by another process (see :mod:`..rundir`)."""
        if self.busy:
            return False
        kwargs = {} if stall_seconds is None else {'stall_seconds': stall_seconds}
        worker = FollowWorker(directory, **kwargs)
        worker.status.connect(self._on_follow_status)
        self.follow_status = None
        self.outcome = None
        self.plots.clear()
        self.setWindowTitle(f'PINN Studio: following {directory}')
        self._launch(worker)
        return True

    def _launch(self, worker: Worker | FollowWorker) -> None:
        thread = QThread(self)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.progress.connect(self._on_progress)
        worker.epoch.connect(self._on_epoch)
        worker.frame.connect(self.plots.show_frame)
        worker.message.connect(self.append_log)
        worker.finished.connect(self._on_finished)
        worker.finished.connect(thread.quit)
        thread.finished.connect(self._cleanup)
        self._thread, self._worker = thread, worker
        self._update_actions()
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat('starting...')
        thread.start()

    @Slot()
    def stop(self) -> None:
        """End the current run within one batch (or stop following)."""
        if self._worker is not None:
            self._worker.stop()
            self.append_log('stop requested')

    @Slot()
    def _cleanup(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.wait()
            thread.deleteLater()
        self.last_worker = self._worker  # tests read its stop timing
        self._thread = self._worker = None
        self._update_actions()
        self.run_finished.emit(self.outcome if self.outcome is not None else self.follow_status)

    @Slot(object)
    def _on_progress(self, info: dict[str, Any]) -> None:
        goal = max(int(info.get('goal') or 0), 1)
        done = float(info.get('done') or 0.0)
        self.progress_bar.setValue(int(PROGRESS_STEPS * min(done / goal, 1.0)))
        self.progress_bar.setFormat(f'{info.get("stage", "")} {done:.1f}/{goal}  %p%')
        self.status_label.setText(
            f'{info.get("stage", "")}: elapsed {_duration(info.get("elapsed"))}, '
            f'ETA {_duration(info.get("eta"))}, device {info.get("device") or "?"}'
        )

    @Slot(object)
    def _on_epoch(self, info: dict[str, Any]) -> None:
        self.plots.add_loss(
            info['stage'], info['progress'], info.get('loss'), info.get('validation_loss')
        )

    @Slot(object)
    def _on_follow_status(self, status: Any) -> None:
        self.follow_status = status
        self.status_label.setText(f'followed run: {status.message}')
        if status.ended or status.stalled:
            self.progress_bar.setFormat(f'{status.state}  %p%')

    @Slot(object)
    def _on_finished(self, result: Any) -> None:
        if isinstance(result, Outcome):
            self.outcome = result
            text = result.status if not result.message else f'{result.status}: {result.message}'
            self.status_label.setText(
                f'{result.job.action} {text} in {_duration(result.seconds)} '
                f'({result.seconds:.1f} s), device {result.device or "?"}'
            )
            self.progress_bar.setFormat(f'{result.status}  %p%')
            if result.status == 'finished':
                self.progress_bar.setValue(PROGRESS_STEPS)
        else:
            self.follow_status = result
            self.status_label.setText(f'followed run: {result.message}')
        self.plots.flush()

    @Slot(str)
    def append_log(self, text: str) -> None:
        self.log.appendPlainText(text)

    # -- saving ---------------------------------------------------------------------------

    def save_product(self, path: str | Path) -> Path:
        """Write the last result (or the last snapshot of a stopped run) as a ptychodus product,
        through the same :class:`~..plugin.layout.ProductWriter` as the CLI."""
        from ..plugin.layout import ProductWriter

        outcome = self.outcome
        if outcome is None or outcome.object is None or outcome.parameters is None:
            raise ValueError('no reconstruction of a scan directory to save yet')
        writer = ProductWriter(outcome.parameters, outcome.payload, outcome.fit_epochs)
        state = 'finished' if outcome.status == 'finished' else 'stopped; last snapshot'
        note = (
            f'PINN Studio {__version__} {outcome.job.action}: preset '
            f'{outcome.payload.config.preset}, progress {outcome.progress}/{outcome.goal} '
            f'({state}) on {outcome.device}'
        )
        probe = outcome.probe if outcome.refine_probe else None
        target = writer.write(path, outcome.object, probe, outcome.losses, note)
        self.append_log(f'saved product {target}')
        return target

    def save_model(self, path: str | Path) -> Path:
        from ..checkpoint import save_model

        if self.outcome is None or self.outcome.model is None:
            raise ValueError('no finished run with a model to save yet')
        target = save_model(self.outcome.model, path)
        self.append_log(f'saved model {target}')
        return target

    def save_png(self, path: str | Path) -> Path:
        """A picture of the whole window (what the user sees)."""
        self.plots.flush()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(target)):
            raise OSError(f'cannot write {target}')
        self.append_log(f'saved {target}')
        return target

    def _save_product_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, 'Save product', '', 'Products (*.h5)')
        if path:
            self._try(lambda: self.save_product(path))

    def _save_model_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, 'Save model', '', 'PINN models (*.safetensors)')
        if path:
            self._try(lambda: self.save_model(path))

    def _save_png_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, 'Save PNG', '', 'PNG (*.png)')
        if path:
            self._try(lambda: self.save_png(path))

    def _follow_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, 'Run directory (events.jsonl)')
        if path:
            self.follow(path)

    def show_compare(self) -> CompareWindow:
        if self.compare_window is None:
            self.compare_window = CompareWindow()
        self.compare_window.show()
        self.compare_window.raise_()
        return self.compare_window

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """Stop a run before the window goes, so the worker thread never outlives it."""
        self.shutdown(10_000)
        super().closeEvent(event)

    def shutdown(self, timeout_ms: int | None = None) -> bool:
        """Stop a run or a followed run and wait for its thread (at most ``timeout_ms``), and
        close the compare window; True once no thread of this window is running.

        :func:`.app.run` calls it without a timeout before it deletes the window: a QThread
        deleted while it runs aborts the process."""
        if self._worker is not None:
            self._worker.stop()
        stopped = True
        if self._thread is not None:
            self._thread.quit()
            stopped = self._thread.wait() if timeout_ms is None else self._thread.wait(timeout_ms)
        if self.compare_window is not None:
            stopped = self.compare_window.shutdown(timeout_ms) and stopped
            self.compare_window.close()
        return stopped
