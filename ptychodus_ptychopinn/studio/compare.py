"""Compare view: two finished runs or products side by side, their difference and the FRC.

Loading, registration and the FRC (:mod:`.frc_compare`) run on a worker thread; the view only
draws the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .frc_compare import Comparison, compare, load_source


class Call(QObject):
    """Runs one function on a QThread and reports its value or error."""

    done = Signal(object)
    failed = Signal(str)

    def __init__(self, function: Callable[[], Any]) -> None:
        super().__init__()
        self.function = function

    @Slot()
    def run(self) -> None:
        try:
            value = self.function()
        except Exception as exc:  # noqa: BLE001 - shown in the view
            self.failed.emit(f'{type(exc).__name__}: {exc}')
        else:
            self.done.emit(value)


def compare_paths(reference: str | Path, test: str | Path) -> Comparison:
    return compare(load_source(reference), load_source(test))


class CompareWindow(QWidget):
    """Pick two sources (product .h5 or run directory), press Compare."""

    compared = Signal(object)
    """Emitted once a comparison is done and the view is free again: the
    :class:`.frc_compare.Comparison`, or None when it failed (see ``error``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle('PINN Studio: compare')
        self.resize(1100, 750)
        column = QVBoxLayout(self)
        grid = QGridLayout()
        self.paths: list[QLineEdit] = []
        for row, name in enumerate(('Reference', 'Test')):
            edit = QLineEdit()
            edit.setPlaceholderText('product .h5 or run directory')
            file_button = QPushButton('File...')
            dir_button = QPushButton('Run dir...')
            file_button.clicked.connect(lambda _=False, e=edit: self._pick_file(e))
            dir_button.clicked.connect(lambda _=False, e=edit: self._pick_dir(e))
            grid.addWidget(QLabel(f'{name}:'), row, 0)
            grid.addWidget(edit, row, 1)
            grid.addWidget(file_button, row, 2)
            grid.addWidget(dir_button, row, 3)
            self.paths.append(edit)
        self.compare_button = QPushButton('Compare')
        self.compare_button.clicked.connect(self.start)
        grid.addWidget(self.compare_button, 2, 3)
        column.addLayout(grid)
        self.summary = QLabel('')
        self.summary.setWordWrap(True)
        column.addWidget(self.summary)

        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground('w')
        column.addWidget(self.plots, 1)
        self.images: dict[str, Any] = {}
        titles = {
            'reference': 'Reference phase (rad)',
            'test': 'Test phase, aligned (rad)',
            'difference': '|test - reference|',
        }
        for col, (key, title) in enumerate(titles.items()):
            plot = self.plots.addPlot(row=0, col=col, title=title)
            plot.setAspectLocked(True)
            plot.invertY(True)
            plot.hideAxis('bottom')
            plot.hideAxis('left')
            item = pg.ImageItem()
            item.setColorMap(pg.colormap.get('CET-L9' if key == 'difference' else 'CET-C1'))
            plot.addItem(item)
            self.images[key] = item
        self.frc_plot = self.plots.addPlot(
            row=1, col=0, colspan=3, title='Fourier ring correlation'
        )
        self.frc_plot.addLegend()
        self.frc_plot.showGrid(x=True, y=True, alpha=0.3)
        self.frc_plot.setLabel('left', 'FRC')
        self.frc_curve = self.frc_plot.plot(pen=pg.mkPen((31, 119, 180), width=2), name='FRC')
        self.threshold_curve = self.frc_plot.plot(
            pen=pg.mkPen((214, 39, 40), width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
            name='half-bit threshold',
        )
        self.result: Comparison | None = None
        self.error = ''
        self._thread: QThread | None = None
        self._call: Call | None = None

    def _pick_file(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, 'Product file', '', 'Products (*.h5 *.hdf5)')
        if path:
            edit.setText(path)

    def _pick_dir(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, 'Run directory')
        if path:
            edit.setText(path)

    def set_paths(self, reference: str | Path, test: str | Path) -> None:
        self.paths[0].setText(str(reference))
        self.paths[1].setText(str(test))

    @property
    def busy(self) -> bool:
        return self._thread is not None

    @Slot()
    def start(self) -> None:
        """Compare the two chosen sources on a worker thread."""
        if self.busy:
            return
        reference, test = (edit.text().strip() for edit in self.paths)
        if not reference or not test:
            self.summary.setText('choose a reference and a test (product file or run directory)')
            return
        self.summary.setText('comparing...')
        self.error, self.result = '', None
        self.compare_button.setEnabled(False)
        thread = QThread(self)
        call = Call(lambda: compare_paths(reference, test))
        call.moveToThread(thread)
        thread.started.connect(call.run)
        call.done.connect(self._show)
        call.failed.connect(self._failed)
        call.done.connect(thread.quit)
        call.failed.connect(thread.quit)
        thread.finished.connect(self._cleanup)
        self._thread, self._call = thread, call
        thread.start()

    def shutdown(self, timeout_ms: int | None = None) -> bool:
        """Wait for a comparison in progress (at most ``timeout_ms``); True once none runs."""
        if self._thread is None:
            return True
        self._thread.quit()
        return bool(self._thread.wait() if timeout_ms is None else self._thread.wait(timeout_ms))

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """The comparison's thread never outlives the window (it is the thread's parent)."""
        self.shutdown(10_000)
        super().closeEvent(event)

    @Slot()
    def _cleanup(self) -> None:
        if self._thread is not None:
            self._thread.wait()
            self._thread.deleteLater()
        self._thread = self._call = None
        self.compare_button.setEnabled(True)
        self.compared.emit(self.result if not self.error else None)

    @Slot(str)
    def _failed(self, text: str) -> None:
        self.error = text
        self.result = None
        self.summary.setText(f'cannot compare: {text}')

    @Slot(object)
    def _show(self, result: Comparison) -> None:
        self.result = result
        self.error = ''
        for key, values in (
            ('reference', np.angle(result.reference)),
            ('test', np.angle(result.test)),
            ('difference', np.abs(result.difference)),
        ):
            self.images[key].setImage(values.astype(np.float32), autoLevels=True)
        scale = 1e-6 if result.pixel_size_m else 1.0
        self.frc_plot.setLabel(
            'bottom', 'spatial frequency (1/um)' if result.pixel_size_m else 'cycles per pixel'
        )
        x = result.frequency * scale
        self.frc_curve.setData(x, np.nan_to_num(result.correlation, nan=0.0))
        self.threshold_curve.setData(x, np.nan_to_num(result.half_bit, nan=1.0))
        self.summary.setText(result.summary())
