"""Shared by tests/test_gui_*.py: ptychodus's real main window, built as its GUI main
(``ptychodus/__main__.py``) builds it, minus ``app.exec()`` (pytest-qt runs the events)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PyQt5 import sip
from PyQt5.QtCore import QElapsedTimer, Qt, QTimer
from PyQt5.QtWidgets import QComboBox, QLabel

from ptychodus_ptychopinn.plugin import LOGGER_NAME, discovery

ROOT = Path(__file__).resolve().parents[1]

# ptychodus's windows are never deleted while ptychodus runs, and deleting one trips its
# agent controller's event filter (a RuntimeError inside a Qt virtual -> abort). So windows
# opened here stay alive until the process ends, and sip does not delete them at exit.
_WINDOWS: list[Window] = []
sip.setdestroyonexit(False)
SAMPLE_DATA = ROOT / 'sample_data'
ALGORITHM = 'pinn_selfsupervised'


@dataclass
class Window:
    """One ModelCore with its ViewCore and ControllerCore: a running ptychodus."""

    model: Any
    view: Any
    controller: Any

    @property
    def settings(self) -> Any:
        return self.model.processing_core.pinn_library.settings

    @property
    def monitor(self) -> Any:
        return self.model.processing_core.processing_api.task_monitor

    def factory(self) -> Any:
        from ptychodus_ptychopinn.plugin.gui.panel import factory_for

        factory = factory_for(self.model.processing_core.algorithm_parameter)
        assert factory is not None, 'the PINN panel factory was not added to this window'
        return factory

    def panel(self, reconstructor: str = 'selfsupervised') -> Any:
        return self.factory().panels[reconstructor]

    def combo_with(self, text: str) -> QComboBox:
        """The Processing view's combo box that lists ``text`` (algorithm or product)."""
        combos = [
            c for c in self.view.processing_view.findChildren(QComboBox) if c.findText(text) >= 0
        ]
        assert len(combos) == 1, f'{len(combos)} combo boxes list {text!r}'
        return combos[0]

    def select_algorithm(self, key: str = ALGORITHM) -> None:
        """Pick ``key`` in the Algorithm combo box as a user does."""
        combo = self.combo_with(key)
        combo.setCurrentIndex(combo.findText(key))
        combo.textActivated.emit(key)
        assert self.model.processing_core.algorithm_parameter.get_value() == key

    def actions_view(self) -> Any:
        from ptychodus.view.processing import ProcessingActionsView

        (actions,) = self.view.processing_view.findChildren(ProcessingActionsView)
        return actions

    def not_found_labels(self) -> list[str]:
        labels = self.view.processing_view.findChildren(QLabel)
        return [label.text() for label in labels if 'not found' in label.text()]

    def close(self) -> None:
        timer = getattr(self.controller, '_run_tasks_timer', None)
        if timer is not None:
            timer.stop()
        self.view.close()


def open_window(model: Any) -> Window:
    from ptychodus.controller import ControllerCore
    from ptychodus.view import ViewCore

    view = ViewCore(is_developer_mode_enabled=model.is_developer_mode_enabled)
    controller = ControllerCore(
        model, view, is_developer_mode_enabled=model.is_developer_mode_enabled
    )
    controller.show_main_window('ptychodus (PINN GUI test)')
    view.resize(1400, 900)
    view.processing_action.trigger()  # the Processing view, where the panel lives
    window = Window(model, view, controller)
    _WINDOWS.append(window)
    return window


@contextmanager
def running_ptychodus(settings_file: Path | None = None) -> Iterator[Window]:
    """ModelCore (plugins load, our library joins) + the main window, closed afterwards."""
    discovery.install()  # what the shim does; the dev .pth may not be installed here
    from ptychodus.model import ModelCore

    with ModelCore(settings_file, log_level=logging.WARNING) as model:
        # the real GUI logs at INFO (its --log-level default); our records then reach the
        # Processing view's status box (pytest may already own the root logger's level)
        logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)
        window = open_window(model)
        try:
            yield window
        finally:
            window.close()


def load_scan(window: Window, directory: Path) -> int:
    """Open ``directory``'s diffraction.h5 + product.h5 as the GUI's file menus do."""
    api = window.model.workflow_api
    diffraction = api.load_assembled_diffraction_data(directory / 'diffraction.h5')
    product = api.load_product(directory / 'product.h5', diffraction=diffraction)
    return int(product.get_product_index())


@dataclass
class TickRecorder:
    """A 10 ms QTimer on the GUI thread: the longest gap between its ticks is how long
    the window could not react. Also samples the progress bar at every tick."""

    progress_bar: Any
    gaps_ms: list[int] = field(default_factory=list)
    progress_seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)
        self._clock = QElapsedTimer()
        self._last = 0

    def start(self) -> None:
        self._clock.start()
        self._last = 0
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._tick()

    def _tick(self) -> None:
        now = self._clock.elapsed()
        self.gaps_ms.append(now - self._last)
        self._last = now
        if self.progress_bar.isVisible():
            value = self.progress_bar.value()
            if not self.progress_seen or self.progress_seen[-1] != value:
                self.progress_seen.append(value)

    @property
    def press_ms(self) -> int:
        """The first gap: the click itself, handled on the GUI thread (ptychodus prepares the
        reconstruction input there: 0.2 s alone, 0.3-0.4 s inside the full suite)."""
        return self.gaps_ms[0] if self.gaps_ms else 0

    @property
    def longest_gap_ms(self) -> int:
        """The longest gap after the click: how long the window froze while the run went."""
        return max(self.gaps_ms[1:], default=0)
