"""A PNG preview of a reconstruction: amplitude, phase, probe amplitude and the loss curve.

Headless by construction: it draws on a bare ``matplotlib.figure.Figure`` with the Agg canvas
and never touches pyplot or the process-wide backend, so it is safe inside a Qt application
and on a cluster node. matplotlib is optional (the ``preview`` extra) and imported only here,
only when a preview is drawn.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PinnError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as FigureType

INSTALL_HINT = "pip install 'ptychodus-ptychopinn[preview]' (or pip install matplotlib)"


class PreviewUnavailable(PinnError):
    """matplotlib is missing, so no preview can be drawn."""


def preview_available() -> bool:
    """True when matplotlib can be imported (checked before a long run, not after)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def scan_crop(
    positions: np.ndarray, n: int, shape: tuple[int, int], margin: int = 2
) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` that the scan illuminates, plus a margin.

    ``positions`` are (x, y) object pixels where the probe centre lands (the payload's).
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 2)
    half = (n - 1) / 2.0
    c0 = int(np.floor(pos[:, 0].min() - half)) - margin
    c1 = int(np.ceil(pos[:, 0].max() + half)) + 1 + margin
    r0 = int(np.floor(pos[:, 1].min() - half)) - margin
    r1 = int(np.ceil(pos[:, 1].max() + half)) + 1 + margin
    height, width = shape
    return max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)


def save_preview(
    path: str | os.PathLike[str],
    object_array: np.ndarray,
    probe_modes: np.ndarray,
    losses: Sequence[tuple[int, float]],
    *,
    crop: tuple[int, int, int, int] | None = None,
    title: str = '',
    stage_boundary: float | None = None,
    dpi: int = 100,
) -> Path:
    """Draw the four panels into ``path`` (PNG), atomically; returns the path.

    The object's global phase (not measurable) is removed for display; ``crop`` limits the
    object panels to the scanned region; ``stage_boundary`` marks where the network fit ends
    and direct refinement starts on the loss axis.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PreviewUnavailable(
            f'no preview: matplotlib is not installed; {INSTALL_HINT}.'
        ) from exc

    obj = np.asarray(object_array)
    if obj.ndim == 3:
        obj = obj[0]
    if crop is not None:
        r0, r1, c0, c1 = crop
        obj = obj[r0:r1, c0:c1]
    offset = np.angle(np.sum(obj)) if np.any(obj) else 0.0
    amplitude = np.abs(obj)
    phase = np.angle(obj * np.exp(-1j * offset))
    probe = np.asarray(probe_modes)
    probe = probe.reshape(-1, *probe.shape[-2:])
    probe_amplitude = np.sqrt(np.sum(np.abs(probe) ** 2, axis=0))

    figure = Figure(figsize=(10, 8.5), dpi=dpi, layout='constrained')
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2)
    _image(figure, axes[0, 0], amplitude, 'object amplitude', 'gray', _limits(amplitude))
    phase_limits = _limits(phase)
    wraps = phase_limits is not None and phase_limits[1] - phase_limits[0] > 5.0
    phase_map = 'twilight' if wraps else 'viridis'
    _image(figure, axes[0, 1], phase, 'object phase (rad)', phase_map, phase_limits)
    _image(
        figure,
        axes[1, 0],
        probe_amplitude,
        f'probe amplitude ({probe.shape[0]} mode{"s" if probe.shape[0] != 1 else ""})',
        'magma',
        None,
    )
    _loss_curve(axes[1, 1], losses, stage_boundary)
    if title:
        figure.suptitle(title)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f'.{target.name}.{uuid.uuid4().hex[:12]}.part')
    try:
        figure.savefig(tmp, format='png')
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _limits(values: np.ndarray) -> tuple[float, float] | None:
    """1st-99th percentile: a few wild edge pixels should not wash out the image."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [1, 99])
    return (float(low), float(high)) if high > low else None


def _image(
    figure: FigureType,
    axis: Axes,
    values: np.ndarray,
    title: str,
    cmap: str,
    limits: tuple[float, float] | None,
) -> None:
    low, high = limits if limits is not None else (None, None)
    image = axis.imshow(values, cmap=cmap, vmin=low, vmax=high, interpolation='nearest')
    axis.set_title(title)
    axis.set_xlabel('x (px)')
    axis.set_ylabel('y (px)')
    figure.colorbar(image, ax=axis, shrink=0.85)


def _loss_curve(
    ax: Axes, losses: Sequence[tuple[int, float]], stage_boundary: float | None
) -> None:
    ax.set_title('loss')
    ax.set_xlabel('epoch (progress)')
    if len(losses) == 0:
        ax.text(0.5, 0.5, 'no epochs run', ha='center', va='center', transform=ax.transAxes)
        return
    epochs = np.array([e for e, _ in losses], dtype=float)
    values = np.array([v for _, v in losses], dtype=float)
    ax.plot(epochs, values, marker='.', color='tab:blue')
    if np.all(values > 0):
        ax.set_yscale('log')
    if stage_boundary is not None and epochs.min() < stage_boundary < epochs.max():
        ax.axvline(stage_boundary, color='gray', linestyle='--', linewidth=1)
        transform = ax.get_xaxis_transform()
        ax.text(stage_boundary, 0.98, ' refine', transform=transform, va='top')
    ax.grid(True, which='both', alpha=0.3)
