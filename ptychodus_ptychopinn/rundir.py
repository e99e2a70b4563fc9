"""A run directory: what a running reconstruction leaves on disk so others can follow it.

Qt-free and ptychodus-free, so the CLI (``--run-dir DIR``) can write one on a cluster node and
PINN Studio (``studio --follow DIR``) can watch it from anywhere that sees the file system.

Format (docs/studio.md):

- ``events.jsonl``: the CLI's ``--events json`` records, one JSON object per line, appended and
  flushed per event (``start``, ``epoch``, ``snapshot``, ``result``, ``interrupted``,
  ``error``). A reader may see a half-written last line; it keeps it and retries.
- ``snapshot.npz``: replaced atomically (temporary file in the same directory, then
  ``os.replace``) on each snapshot: ``object`` (complex64 H x W), ``probe`` (complex64
  M x N x N), ``losses`` (float64 K x 2: progress, loss), ``validation_losses`` (float64 K x 2,
  may be empty), ``progress`` (int), ``stage`` (str).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

EVENTS_FILE = 'events.jsonl'
SNAPSHOT_FILE = 'snapshot.npz'
FINAL_EVENTS = ('result', 'interrupted', 'error')
"""Records after which a run writes nothing more."""
DEFAULT_STALL_SECONDS = 60.0


def _json_value(value: Any) -> Any:
    """JSON has no NaN/Inf (the CLI reports them as null); numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _history(values: Iterable[tuple[float, float]] | np.ndarray) -> np.ndarray:
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, float)
    return array.reshape(-1, 2)


@dataclass(frozen=True)
class Snapshot:
    """The newest complete state of a run as read from ``snapshot.npz``."""

    object: np.ndarray
    probe: np.ndarray
    losses: np.ndarray
    validation_losses: np.ndarray
    progress: int
    stage: str
    mtime_ns: int = 0


class RunDirWriter:
    """Writes a run directory: append-and-flush event lines, atomic snapshot replacement."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._events: TextIO | None = open(  # noqa: SIM115 - kept open for the run
            self.directory / EVENTS_FILE, 'a', encoding='utf-8'
        )

    def event(self, record: Mapping[str, Any]) -> None:
        """Append one record (a dict with an ``event`` key) as one line, flushed at once."""
        if self._events is None:
            raise ValueError(f'the run directory writer for {self.directory} is closed')
        clean = {str(k): _json_value(v) for k, v in record.items()}
        self._events.write(json.dumps(clean) + '\n')
        self._events.flush()

    def snapshot(
        self,
        *,
        object: np.ndarray,  # noqa: A002 - the name the format uses
        probe: np.ndarray,
        losses: Iterable[tuple[float, float]] | np.ndarray,
        progress: int,
        stage: str,
        validation_losses: Iterable[tuple[float, float]] | np.ndarray = (),
    ) -> None:
        """Replace ``snapshot.npz`` atomically, so a reader never sees a half-written one."""
        final = self.directory / SNAPSHOT_FILE
        tmp = self.directory / f'.{SNAPSHOT_FILE}.{uuid.uuid4().hex[:12]}.part'
        try:
            with open(tmp, 'wb') as handle:
                np.savez(
                    handle,
                    object=np.asarray(object).astype(np.complex64, copy=False),
                    probe=np.asarray(probe).astype(np.complex64, copy=False),
                    losses=_history(losses),
                    validation_losses=_history(validation_losses),
                    progress=np.int64(progress),
                    stage=np.str_(stage),
                )
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> RunDirWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunDirReader:
    """Reads a run directory incrementally; tolerant of a truncated last line and of a
    snapshot that is missing or unreadable (returns None and tries again next time)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._offset = 0
        self._partial = b''
        self.records: list[dict[str, Any]] = []
        self.last_event_time: float | None = None
        self._snapshot: Snapshot | None = None
        self._opened = time.monotonic()

    @property
    def events_path(self) -> Path:
        return self.directory / EVENTS_FILE

    @property
    def snapshot_path(self) -> Path:
        return self.directory / SNAPSHOT_FILE

    def poll(self) -> list[dict[str, Any]]:
        """New complete records since the last call (a partial last line waits for its end)."""
        try:
            with open(self.events_path, 'rb') as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b'\n')
        self._partial = lines.pop()  # b'' when the chunk ended with a newline
        new: list[dict[str, Any]] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a damaged line in the middle: skip it, keep following
            if isinstance(record, dict):
                new.append(record)
        if new:
            self.records.extend(new)
            self.last_event_time = time.monotonic()
        return new

    def latest_snapshot(self) -> Snapshot | None:
        """The newest readable snapshot, or None when there is none (yet) or it is unreadable.

        Unchanged files are not read again (same modification time and size)."""
        try:
            stat = self.snapshot_path.stat()
        except FileNotFoundError:
            return None
        stamp = stat.st_mtime_ns ^ (stat.st_size << 1)
        if self._snapshot is not None and self._snapshot.mtime_ns == stamp:
            return self._snapshot
        try:
            with np.load(self.snapshot_path, allow_pickle=False) as data:
                snapshot = Snapshot(
                    object=np.asarray(data['object']),
                    probe=np.asarray(data['probe']),
                    losses=np.asarray(data['losses'], float).reshape(-1, 2),
                    validation_losses=np.asarray(data['validation_losses'], float).reshape(-1, 2),
                    progress=int(data['progress']),
                    stage=str(data['stage']),
                    mtime_ns=stamp,
                )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None
        self._snapshot = snapshot
        return snapshot

    def status(self, stall_seconds: float = DEFAULT_STALL_SECONDS) -> RunStatus:
        """What the records seen so far say (see :func:`run_status`)."""
        last = self._opened if self.last_event_time is None else self.last_event_time
        return run_status(self.records, last, stall_seconds=stall_seconds)


@dataclass(frozen=True)
class RunStatus:
    """``state``: 'waiting' (no record yet), 'running', 'stalled', or the final event's name
    ('result', 'interrupted', 'error'); ``ended`` is True for the last three."""

    state: str
    ended: bool
    stalled: bool
    message: str
    seconds_since_event: float | None = None


def run_status(
    records: list[dict[str, Any]],
    last_event_time: float | None,
    *,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    now: float | None = None,
) -> RunStatus:
    """Whether a run ended (a result/interrupted/error record) or stalled (no new record for
    ``stall_seconds``; ``last_event_time`` and ``now`` are ``time.monotonic()`` values)."""
    now = time.monotonic() if now is None else now
    since = None if last_event_time is None else max(now - last_event_time, 0.0)
    final = next((r for r in reversed(records) if r.get('event') in FINAL_EVENTS), None)
    if final is not None:
        kind = str(final['event'])
        if kind == 'result':
            text = f'finished: progress {final.get("progress")}/{final.get("goal")}'
            if final.get('seconds') is not None:
                text += f' in {final["seconds"]:.1f} s'
        elif kind == 'interrupted':
            text = f'interrupted at progress {final.get("progress")}/{final.get("goal")}'
        else:
            text = f'failed: {final.get("message", "unknown error")}'
        return RunStatus(kind, True, False, text, since)
    if since is not None and since > stall_seconds:
        what = 'no new event' if records else 'no event at all'
        return RunStatus('stalled', False, True, f'stalled: {what} for {since:.0f} s', since)
    if not records:
        return RunStatus('waiting', False, False, 'waiting for the run to start', since)
    return RunStatus('running', False, False, 'running', since)
