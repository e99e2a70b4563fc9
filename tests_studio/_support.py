"""Helpers for the studio tests: a GUI-stall probe and a tiny-run configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QElapsedTimer, Qt, QTimer

TINY = {'snapshot_every': 1, 'batch_size': 16, 'refine_batch_size': 100}
"""Overrides that keep a `fast` run on sample_data to seconds on a busy 2-core CPU."""


@dataclass
class StallProbe:
    """A 10 ms QTimer on the GUI thread: the longest gap between its ticks is the longest
    time the window could not react (as tests/_gui_support.py measures ptychodus's)."""

    gaps_ms: list[int] = field(default_factory=list)
    longest_at_s: float = 0.0
    """Seconds after :meth:`start` at which the longest gap ended."""

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
        gap = now - self._last
        if gap > max(self.gaps_ms, default=0):
            self.longest_at_s = now / 1000
        self.gaps_ms.append(gap)
        self._last = now

    @property
    def longest_gap_ms(self) -> int:
        return max(self.gaps_ms, default=0)
