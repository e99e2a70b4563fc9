"""How a command tells the world what it does.

JSON lines on stdout with ``--events json`` (a contract: field names and records stay as they
are), a tqdm progress bar on a terminal or one line per epoch otherwise (stderr), and log
records routed through the same channel so they never tear the bar.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

if TYPE_CHECKING:
    from ..engine import StageEndEvent
    from ..rundir import RunDirWriter

BAR_FORMAT = '{percentage:3.0f}%|{bar}| {desc} {n:.1f}/{total_fmt}{postfix} [{elapsed}<{remaining}]'


class _Bar(tqdm):  # type: ignore[type-arg]
    """tqdm without its monitor thread (a CLI run needs no background thread of ours)."""

    monitor_interval = 0


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf: report them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Reporter:
    """Where a run tells the world what it does: JSON lines on stdout (``--events json``),
    a progress bar on a terminal or one line per epoch otherwise (stderr), messages."""

    def __init__(
        self,
        *,
        events_json: bool = False,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.events_json = events_json
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.bar: tqdm[Any] | None = None
        self.goal = 0
        self.done = 0.0
        self.stage = ''
        self.loss: float | None = None
        self.use_bar = not quiet and _isatty(self.stderr)
        self.run_dir: RunDirWriter | None = None

    def attach_run_dir(self, directory: str) -> None:
        """Also write every record and snapshot to a run directory (``studio --follow``)."""
        from ..rundir import RunDirWriter

        self.run_dir = RunDirWriter(directory)

    def close(self) -> None:
        if self.run_dir is not None:
            self.run_dir.close()
            self.run_dir = None

    def emit(self, event: str, **values: Any) -> None:
        record = {'event': event, **{k: _clean(v) for k, v in values.items()}}
        if self.run_dir is not None:
            self.run_dir.event(record)
        if self.events_json:
            self.stdout.write(json.dumps(record) + '\n')
            self.stdout.flush()

    def message(self, text: str, *, always: bool = False) -> None:
        if self.quiet and not always:
            return
        if self.bar is not None:
            self.bar.clear()
        self.stderr.write(text + '\n')
        self.stderr.flush()
        if self.bar is not None:
            self.bar.refresh()

    def start(self, goal: int, **values: Any) -> None:
        self.goal = goal
        self.done = 0.0
        if self.use_bar:
            self.bar = _Bar(
                total=max(goal, 1),
                file=self.stderr,
                bar_format=BAR_FORMAT,
                dynamic_ncols=True,
                mininterval=0.1,
                leave=True,
            )
        self.emit('start', goal=goal, **values)

    def _draw(self, stage: str, force: bool = False) -> None:
        bar = self.bar
        if bar is None:
            return
        bar.set_description_str(stage, refresh=False)
        if self.loss is not None:
            bar.set_postfix_str(f'loss {self.loss:.4g}', refresh=False)
        bar.n = min(self.done, float(bar.total))
        if force:
            bar.refresh()
        else:
            bar.update(0)

    def batch(self, stage: str, batch: int, num_batches: int, loss: float) -> None:
        self.stage = stage
        if math.isfinite(loss):
            self.loss = loss
        if self.bar is not None:
            done = self.done
            self.done = done + (batch + 1) / max(num_batches, 1)
            self._draw(stage)
            self.done = done

    def epoch(
        self,
        stage: str,
        epoch: int,
        num_epochs: int,
        loss: float,
        seconds: float,
        progress: int,
        **extra: Any,
    ) -> None:
        self.done = float(progress)
        self.loss = loss
        self.emit(
            'epoch',
            stage=stage,
            epoch=epoch + 1,
            num_epochs=num_epochs,
            progress=progress,
            goal=self.goal,
            loss=loss,
            seconds=round(seconds, 4),
            **extra,
        )
        if self.bar is not None:
            self._draw(stage, force=True)
        else:
            more = ''.join(f', {k.replace("_", " ")} {v:.6g}' for k, v in extra.items())
            self.message(
                f'{stage} epoch {epoch + 1}{_of(num_epochs)} [{progress}/{self.goal}]: '
                f'loss {loss:.6g}{more} ({seconds:.2f} s)'
            )

    def stage_end(self, event: StageEndEvent) -> None:
        """A stage ended: say why (``epochs``, ``plateau`` or ``time``) and after how long."""
        self.emit(
            'stage_end',
            stage=event.stage,
            reason=event.reason,
            epochs=event.epochs,
            max_epochs=event.max_epochs,
            seconds=round(event.seconds, 3),
        )
        self.message(
            f'{event.stage}: stopped after {event.epochs}{_of(event.max_epochs)} epochs '
            f'({event.seconds:.1f} s): {event.reason_text}.'
        )

    def snapshot(self, stage: str, progress: int, **arrays: Any) -> None:
        """A new object; ``arrays`` (object, probe, losses) go to the run directory, if any."""
        self.done = float(progress)
        if self.run_dir is not None and arrays:
            self.run_dir.snapshot(progress=progress, stage=stage, **arrays)
        self.emit('snapshot', stage=stage, progress=progress, goal=self.goal)
        self._draw(stage, force=True)

    def finish(self) -> None:
        if self.bar is not None:
            self._draw(self.stage, force=True)
            self.bar.close()
            self.bar = None


def _of(ceiling: int) -> str:
    """'/N' for an epoch ceiling; nothing for a stage that only a budget ends."""
    from ..engine.loop import UNBOUNDED

    return '' if ceiling >= UNBOUNDED else f'/{ceiling}'


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _ReporterHandler(logging.Handler):
    """Log records go through the reporter so they do not tear the progress bar."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter
        self.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.message(self.format(record), always=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(reporter: Reporter, verbose: bool) -> Callable[[], None]:
    root = logging.getLogger()
    handler = _ReporterHandler(reporter)
    level_before = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(level_before)

    return restore
