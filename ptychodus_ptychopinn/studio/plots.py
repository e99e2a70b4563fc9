"""The live view: loss curves per stage (log y, train and validation), object amplitude and
phase with the scan's illumination shown by dimming unlit pixels, and the probe modes.

Only cheap calls run here (``setData``/``setImage`` of arrays prepared by the worker); redraws
are coalesced so at most one pending frame and one loss redraw wait per event-loop pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGridLayout, QWidget

from .frames import LIT_FRACTION, Frame, LossBook

pg.setConfigOptions(imageAxisOrder='row-major', antialias=False)

STAGE_COLOURS = {
    'fit': (31, 119, 180),
    'refine': (214, 39, 40),
    'train': (44, 160, 44),
    'infer': (148, 103, 189),
}
REDRAW_INTERVAL_MS = 30


class LivePlots(QWidget):
    """Four panels, each its own pyqtgraph view (so a new loss point repaints the loss panel
    only); feed it :class:`Frame` objects and loss points."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(2)
        self.views: list[Any] = []

        self.amplitude_plot = self._image_plot(0, 0, 'Object amplitude')
        self.phase_plot = self._image_plot(0, 1, 'Object phase (rad)')
        self.amplitude = pg.ImageItem()
        self.phase = pg.ImageItem()
        self.phase.setColorMap(pg.colormap.get('viridis'))
        self.amplitude_shade = pg.ImageItem()
        self.phase_shade = pg.ImageItem()
        for plot, item, shade in (
            (self.amplitude_plot, self.amplitude, self.amplitude_shade),
            (self.phase_plot, self.phase, self.phase_shade),
        ):
            plot.addItem(item)
            plot.addItem(shade)
            shade.setZValue(10)
        self.amplitude_bar = pg.ColorBarItem(colorMap=pg.colormap.get('CET-L1'), width=12)
        self.amplitude_bar.setImageItem(self.amplitude, insert_in=self.amplitude_plot)
        self.phase_bar = pg.ColorBarItem(colorMap=pg.colormap.get('viridis'), width=12)
        self.phase_bar.setImageItem(self.phase, insert_in=self.phase_plot)

        self.loss_plot = self._panel(1, 0).addPlot(title='Loss')
        self.loss_plot.setLabel('bottom', 'progress (epochs)')
        self.loss_plot.setLabel('left', 'excess loss')
        self.loss_plot.showGrid(x=True, y=True, alpha=0.3)
        self.loss_plot.addLegend(offset=(-10, 10))
        self.loss_plot.setLogMode(y=True)
        self.probe_plot = self._image_plot(1, 1, 'Probe modes (amplitude)')
        self.probe = pg.ImageItem()
        self.probe.setColorMap(pg.colormap.get('CET-L3'))
        self.probe_plot.addItem(self.probe)

        self.losses = LossBook()
        self.curves: dict[tuple[str, str], Any] = {}
        self.frames_drawn = 0
        self.loss_redraws = 0
        self.last_frame: Frame | None = None
        self._pending_frame: Frame | None = None
        self._losses_dirty = False
        self._steps: list[Callable[[], None]] = []
        self._shade_keys: dict[int, int | None] = {}
        self._probe_modes = -1
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)

    def _panel(self, row: int, col: int) -> Any:
        view = pg.GraphicsLayoutWidget()
        view.setBackground('w')
        self._grid.addWidget(view, row, col)
        self.views.append(view)
        return view

    def _image_plot(self, row: int, col: int, title: str) -> Any:
        plot = self._panel(row, col).addPlot(title=title)
        plot.setAspectLocked(True)
        plot.invertY(True)
        plot.hideAxis('bottom')
        plot.hideAxis('left')
        return plot

    # -- input ----------------------------------------------------------------------------

    def show_frame(self, frame: Frame) -> None:
        """Queue a frame; only the newest queued one is drawn."""
        self._pending_frame = frame
        self._schedule()

    def add_loss(
        self, stage: str, progress: float, loss: float | None, validation: float | None = None
    ) -> None:
        self.losses.add(stage, progress, loss)
        self.losses.add(stage, progress, validation, 'validation')
        self._losses_dirty = True
        self._schedule()

    def set_losses(self, book: LossBook) -> None:
        self.losses = book
        self._losses_dirty = True
        self._schedule()

    def clear(self) -> None:
        self.losses = LossBook()
        for curve in self.curves.values():
            self.loss_plot.removeItem(curve)
        legend = self.loss_plot.legend
        if legend is not None:
            legend.clear()
        self.curves.clear()
        self._losses_dirty = True
        self.last_frame = None
        self._schedule()

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Draw what is pending now (tests, screenshots)."""
        self._timer.stop()
        while self._steps:
            self._steps.pop(0)()
        frame, self._pending_frame = self._pending_frame, None
        if frame is not None:
            self._draw_frame(frame)
        if self._losses_dirty:
            self._losses_dirty = False
            self._draw_losses()

    # -- drawing --------------------------------------------------------------------------

    def _redraw(self) -> None:
        """One step per timer tick, so each repaint stays small: the new frame's amplitude,
        then its phase, then the probe, then the loss curves (a whole-window repaint of all
        four panels took 40-110 ms on a busy 2-core CPU; one panel takes a fraction)."""
        if self._steps:
            step = self._steps.pop(0)
            step()
        elif self._pending_frame is not None:
            frame, self._pending_frame = self._pending_frame, None
            self._steps = [
                lambda: self._draw_amplitude(frame),
                lambda: self._draw_phase(frame),
                lambda: self._draw_probe(frame),
            ]
            self._steps.pop(0)()
        elif self._losses_dirty:
            self._losses_dirty = False
            self._draw_losses()
        if self._steps or self._pending_frame is not None or self._losses_dirty:
            self._timer.start()

    def _draw_amplitude(self, frame: Frame) -> None:
        self.amplitude.setImage(frame.amplitude, autoLevels=False, levels=frame.amplitude_levels)
        self.amplitude_bar.setLevels(frame.amplitude_levels)
        self._set_shade(self.amplitude_shade, frame)

    def _draw_phase(self, frame: Frame) -> None:
        self.phase.setImage(frame.phase, autoLevels=False, levels=frame.phase_levels)
        self.phase_bar.setLevels(frame.phase_levels)
        self._set_shade(self.phase_shade, frame)

    def _draw_probe(self, frame: Frame) -> None:
        self.probe.setImage(frame.probe, autoLevels=True)
        if frame.num_modes != self._probe_modes:
            self._probe_modes = frame.num_modes
            plural = 's' if frame.num_modes != 1 else ''
            self.probe_plot.setTitle(f'Probe: {frame.num_modes} mode{plural} (amplitude)')
        self.last_frame = frame
        self.frames_drawn += 1

    def _set_shade(self, item: Any, frame: Frame) -> None:
        """The illumination overlay changes once per run: re-rendered only then."""
        light = frame.illumination
        key = None if light is None else hash((light.__array_interface__['data'][0], light.shape))
        if self._shade_keys.get(id(item), -1) == key:
            return
        self._shade_keys[id(item)] = key
        shade = _shade(frame.illumination, frame.amplitude.shape)
        if shade is None:
            item.clear()
        else:
            item.setImage(shade, autoLevels=False, levels=(0, 255))

    def _draw_frame(self, frame: Frame) -> None:
        """Everything at once (flush: tests and screenshots)."""
        self._draw_amplitude(frame)
        self._draw_phase(frame)
        self._draw_probe(frame)

    def _draw_losses(self) -> None:
        log = self.losses.all_positive()
        self.loss_plot.setLogMode(y=log)
        self.loss_plot.setLabel('left', 'excess loss (log)' if log else 'loss')
        for key, points in self.losses.curves.items():
            stage, kind = key
            data = np.asarray(points, float).reshape(-1, 2)
            curve = self.curves.get(key)
            if curve is None:
                colour = STAGE_COLOURS.get(stage, (90, 90, 90))
                style = pg.QtCore.Qt.PenStyle.DashLine if kind == 'validation' else None
                pen = pg.mkPen(colour, width=2, style=style) if style else pg.mkPen(colour, width=2)
                name = stage if kind == 'train' else f'{stage} (validation)'
                curve = self.loss_plot.plot(
                    pen=pen, name=name, symbol='o', symbolSize=4, symbolBrush=colour
                )
                self.curves[key] = curve
            curve.setData(data[:, 0], data[:, 1])
        self.loss_redraws += 1


def _shade(illumination: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """A black RGBA overlay, transparent where the probe lit the object and dimming where
    it did not: the reconstruction is only meaningful where the scan looked."""
    if illumination is None or illumination.shape != shape:
        return None
    light = np.clip(illumination / max(LIT_FRACTION * 4, 1e-6), 0.0, 1.0)
    rgba = np.zeros((*shape, 4), np.uint8)
    rgba[..., 3] = (160 * (1.0 - light)).astype(np.uint8)
    return rgba
