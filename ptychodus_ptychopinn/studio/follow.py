"""Follow mode: watch a run started elsewhere through its run directory.

A :class:`FollowWorker` polls :class:`~ptychodus_ptychopinn.rundir.RunDirReader` on its own
thread (file reads and ``abs``/``angle`` never run on the GUI thread) and sends the same
signals as the run worker, so the window shows a followed run with the same live view. It
stops after the run's final record (``result``, ``interrupted``, ``error``) and reports a
stall when no record arrives for ``stall_seconds``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from ..rundir import DEFAULT_STALL_SECONDS, RunDirReader, RunStatus
from .frames import make_frame

POLL_INTERVAL_S = 0.25


class FollowWorker(QObject):
    progress = Signal(object)
    epoch = Signal(object)
    frame = Signal(object)
    message = Signal(str)
    status = Signal(object)
    finished = Signal(object)

    def __init__(
        self,
        directory: str | Path,
        *,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.reader = RunDirReader(self.directory)
        self.stall_seconds = stall_seconds
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._goal = 0
        self._device = ''
        self._started = time.monotonic()
        self._snapshot_stamp = -1
        self._last_state = ''

    def stop(self) -> None:
        self._stop.set()

    @Slot()
    def run(self) -> None:
        status = self.reader.status(self.stall_seconds)
        try:
            self.message.emit(f'following {self.directory}')
            while True:
                records = self.reader.poll()
                for record in records:
                    self._handle(record)
                self._emit_snapshot()
                status = self.reader.status(self.stall_seconds)
                if status.state != self._last_state:
                    self._last_state = status.state
                    self.status.emit(status)
                    if status.stalled or status.ended:
                        self.message.emit(status.message)
                if status.ended or self._stop.wait(self.poll_interval):
                    break
        except Exception as exc:  # noqa: BLE001 - shown in the window
            self.message.emit(f'error while following: {type(exc).__name__}: {exc}')
            status = RunStatus('error', True, False, str(exc))
        finally:
            self.finished.emit(status)

    def _handle(self, record: dict[str, Any]) -> None:
        kind = record.get('event')
        if kind == 'start':
            self._goal = int(record.get('goal') or 0)
            self._device = str(record.get('device') or '')
            self._started = time.monotonic()
            details = ', '.join(
                f'{k} {record[k]}' for k in ('command', 'preset', 'patterns', 'n') if k in record
            )
            self.message.emit(f'run started: {details} on {self._device}')
            self._progress('start', 0.0)
        elif kind == 'epoch':
            loss = record.get('excess_loss', record.get('loss'))
            self.epoch.emit(
                {
                    'stage': str(record.get('stage', '')),
                    'progress': record.get('progress', 0),
                    'loss': loss,
                    'validation_loss': record.get('validation_loss'),
                }
            )
            self._goal = int(record.get('goal') or self._goal)
            self._progress(str(record.get('stage', '')), float(record.get('progress') or 0))
        elif kind == 'snapshot':
            self._progress(str(record.get('stage', '')), float(record.get('progress') or 0))
        elif kind == 'result':
            self._progress('done', float(record.get('progress') or self._goal))
        elif kind in ('interrupted', 'error'):
            text = record.get('message') or f'progress {record.get("progress")}'
            self.message.emit(f'run {kind}: {text}')

    def _progress(self, stage: str, done: float) -> None:
        elapsed = time.monotonic() - self._started
        fraction = min(max(done / max(self._goal, 1), 0.0), 1.0)
        self.progress.emit(
            {
                'stage': stage,
                'done': done,
                'goal': self._goal,
                'loss': None,
                'elapsed': elapsed,
                'eta': elapsed * (1 - fraction) / fraction if fraction > 0 else None,
                'device': self._device,
            }
        )

    def _emit_snapshot(self) -> None:
        snapshot = self.reader.latest_snapshot()
        if snapshot is None or snapshot.mtime_ns == self._snapshot_stamp:
            return
        self._snapshot_stamp = snapshot.mtime_ns
        self.frame.emit(
            make_frame(
                snapshot.object,
                snapshot.probe,
                stage=snapshot.stage,
                progress=snapshot.progress,
            )
        )
