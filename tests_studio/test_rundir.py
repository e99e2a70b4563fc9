"""The run-directory format (Qt-free): append-and-flush events, atomic snapshots, a reader that
survives a truncated last line and a half-written snapshot, and the ended/stalled status."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ptychodus_ptychopinn.rundir import (
    EVENTS_FILE,
    SNAPSHOT_FILE,
    RunDirReader,
    RunDirWriter,
    run_status,
)


def _snapshot(writer: RunDirWriter, progress: int) -> None:
    writer.snapshot(
        object=np.full((12, 10), 1 + 0.5j * progress),
        probe=np.ones((2, 8, 8)),
        losses=[(p, 10.0 / p) for p in range(1, progress + 1)],
        progress=progress,
        stage='refine',
    )


def test_round_trip_and_truncated_last_line(tmp_path: Path) -> None:
    writer = RunDirWriter(tmp_path)
    reader = RunDirReader(tmp_path)
    assert reader.poll() == [] and reader.latest_snapshot() is None
    assert reader.status().state == 'waiting'
    writer.event({'event': 'start', 'goal': 3, 'device': 'cpu'})
    writer.event({'event': 'epoch', 'progress': 1, 'loss': float('nan')})
    assert [r['event'] for r in reader.poll()] == ['start', 'epoch']
    assert reader.records[1]['loss'] is None  # NaN -> null, as the CLI writes it
    _snapshot(writer, 2)
    snap = reader.latest_snapshot()
    assert snap is not None and snap.progress == 2 and snap.stage == 'refine'
    assert snap.object.dtype == np.complex64 and snap.object.shape == (12, 10)
    assert snap.probe.shape == (2, 8, 8) and snap.losses.shape == (2, 2)
    assert snap.validation_losses.shape == (0, 2)
    assert not list(tmp_path.glob('*.part'))  # the temporary file went
    writer.close()

    # another process appends half a record: the reader waits for the rest
    line = json.dumps({'event': 'result', 'progress': 3, 'goal': 3, 'seconds': 1.5}) + '\n'
    with open(tmp_path / EVENTS_FILE, 'a') as handle:
        handle.write(line[:17])
    assert reader.poll() == []
    assert not reader.status().ended
    with open(tmp_path / EVENTS_FILE, 'a') as handle:
        handle.write(line[17:])
    (record,) = reader.poll()
    assert record['event'] == 'result'
    status = reader.status()
    assert status.ended and status.state == 'result' and '3/3' in status.message


def test_half_written_snapshot_reads_as_none(tmp_path: Path) -> None:
    with RunDirWriter(tmp_path) as writer:
        _snapshot(writer, 1)
    data = (tmp_path / SNAPSHOT_FILE).read_bytes()
    (tmp_path / SNAPSHOT_FILE).write_bytes(data[: len(data) // 2])
    assert RunDirReader(tmp_path).latest_snapshot() is None


def test_status_stalled_and_final_events() -> None:
    records = [{'event': 'start'}, {'event': 'epoch'}]
    assert run_status(records, 100.0, now=105.0, stall_seconds=60).state == 'running'
    stalled = run_status(records, 100.0, now=200.0, stall_seconds=60)
    assert stalled.stalled and not stalled.ended and '100 s' in stalled.message
    for kind in ('result', 'interrupted', 'error'):
        done = run_status([*records, {'event': kind, 'message': 'x'}], 0.0, now=1e6)
        assert done.ended and not done.stalled and done.state == kind


def test_help_and_missing_pyside6_message() -> None:
    """``--help`` needs no Qt; without PySide6 the studio says what to install (exit 2)."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    env = {'PYTHONPATH': root, 'PATH': '/usr/bin:/bin'}
    blocked = (
        "import sys; sys.modules['PySide6'] = None; "
        'from ptychodus_ptychopinn.studio.app import main; '
    )
    helped = subprocess.run(
        [sys.executable, '-c', blocked + "main(['--help'])"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        helped.returncode == 0
        and '--follow' in helped.stdout
        and '--exit-when-done' in helped.stdout
    )
    missing = subprocess.run(
        [sys.executable, '-c', blocked + 'sys.exit(main([]))'],
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert "pip install 'ptychodus-ptychopinn[studio]'" in missing.stderr
    assert 'PyQt5' not in missing.stderr
