"""What the live view draws, computed off the GUI thread (Qt-free).

The worker turns each engine snapshot into a :class:`Frame` (amplitude, phase, probe-mode
amplitudes, all downsampled, float32) so the GUI thread only hands ready arrays to pyqtgraph:
``abs``/``angle``/striding of a large object take long enough to stall a window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LIT_FRACTION = 0.05
"""Pixels with less than this share of the peak summed probe intensity count as unlit."""
MAX_SIDE = 384
"""Longest side of an image sent to the GUI; larger objects are strided down."""


@dataclass(frozen=True)
class Frame:
    """One state of the object and probe, ready to draw."""

    amplitude: np.ndarray
    phase: np.ndarray
    probe: np.ndarray
    """Amplitudes of the probe modes side by side (N x M*N)."""
    num_modes: int
    stage: str
    progress: int
    illumination: np.ndarray | None = None
    """Probe intensity summed over the scan on the amplitude's grid, scaled to [0, 1]."""
    step: int = 1
    """Stride used to downsample the object."""
    amplitude_levels: tuple[float, float] = (0.0, 1.0)
    phase_levels: tuple[float, float] = (-math.pi, math.pi)


def stride_for(shape: tuple[int, ...], max_side: int = MAX_SIDE) -> int:
    return max(1, math.ceil(max(shape[-2:]) / max_side))


def make_frame(
    obj: np.ndarray,
    probe: np.ndarray,
    *,
    stage: str,
    progress: int,
    illumination: np.ndarray | None = None,
    max_side: int = MAX_SIDE,
) -> Frame:
    """Object (H, W) complex and probe modes (M, N, N) complex -> a drawable frame."""
    obj = np.asarray(obj)
    if obj.ndim == 3:
        obj = obj[0]
    step = stride_for(obj.shape, max_side)
    small = obj[::step, ::step]
    modes = np.asarray(probe)
    if modes.ndim == 2:
        modes = modes[np.newaxis]
    if modes.ndim == 4:  # (OPR, M, N, N): the shared mode
        modes = modes[0]
    probe_step = stride_for(modes.shape, max_side // 2)
    amplitudes = np.abs(modes[:, ::probe_step, ::probe_step]).astype(np.float32)
    tiled = np.concatenate(list(amplitudes), axis=1) if len(amplitudes) else amplitudes
    light = None
    if illumination is not None:
        light = np.asarray(illumination, np.float32)[::step, ::step]
    amplitude = np.abs(small).astype(np.float32)
    phase = np.angle(small).astype(np.float32)
    lit = light > LIT_FRACTION if light is not None and light.shape == amplitude.shape else None
    return Frame(
        amplitude=amplitude,
        phase=phase,
        probe=np.ascontiguousarray(tiled),
        num_modes=int(modes.shape[0]),
        stage=stage,
        progress=int(progress),
        illumination=light,
        step=step,
        amplitude_levels=_levels(amplitude, lit),
        phase_levels=_levels(phase, lit),
    )


def _levels(values: np.ndarray, lit: np.ndarray | None) -> tuple[float, float]:
    """Display range from the 1st to 99th percentile of the lit pixels (all if none are)."""
    chosen = values[lit] if lit is not None and lit.any() else values.ravel()
    chosen = chosen[np.isfinite(chosen)]
    if chosen.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(chosen, [1.0, 99.0])
    if high <= low:
        high = low + 1e-6
    return (float(low), float(high))


def illumination_map(
    probe_modes: np.ndarray, positions: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Summed probe intensity over all scan points on the object grid, scaled to [0, 1].

    ``positions`` are (x, y) object pixels where the probe centre lands (as in the payload);
    the probe's first pixel sits at ``position - (N - 1) / 2``, rounded to the pixel.
    """
    modes = np.asarray(probe_modes)
    if modes.ndim == 2:
        modes = modes[np.newaxis]
    intensity = (np.abs(modes) ** 2).sum(axis=0)
    n = intensity.shape[-1]
    canvas = np.zeros(shape, np.float64)
    height, width = shape
    for x, y in np.asarray(positions, float).reshape(-1, 2):
        c0 = int(round(x - (n - 1) / 2))
        r0 = int(round(y - (n - 1) / 2))
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + n, height), min(c0 + n, width)
        if rs < re and cs < ce:
            canvas[rs:re, cs:ce] += intensity[rs - r0 : re - r0, cs - c0 : ce - c0]
    peak = canvas.max()
    return (canvas / peak if peak > 0 else canvas).astype(np.float32)


@dataclass
class LossBook:
    """Loss curves per stage and kind ('train' or 'validation'): x = progress, y = loss."""

    curves: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, stage: str, progress: float, loss: float | None, kind: str = 'train') -> None:
        if loss is None or not math.isfinite(loss):
            return
        self.curves.setdefault((stage, kind), []).append((float(progress), float(loss)))

    def clear(self) -> None:
        self.curves.clear()

    def all_positive(self) -> bool:
        return all(y > 0 for points in self.curves.values() for _, y in points)

    def __len__(self) -> int:
        return sum(len(points) for points in self.curves.values())
