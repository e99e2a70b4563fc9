"""Arrays + configuration -> a validated payload: the single seam between a host and the engine.

Everything the engine relies on is checked here, before any heavy work, and each failure says
what is wrong and what to do. Counts stay in their source dtype (a uint16 scan is not copied to
float); the engine converts one batch at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SUPPORTED_N, ResolvedConfig, resolve_config
from .data.grouping import Groups, group_neighbours
from .data.scaling import input_scale
from .errors import InputError
from .physics.translate import canvas_size

CHECK_CHUNK = 512


@dataclass(frozen=True)
class Payload:
    """Validated inputs for the engine, all in object-pixel units.

    ``positions`` are (x, y) = (column, row) object pixels where the probe centre lands;
    ``object_init`` is the object grid (H, W) and the values kept where nothing is lit.
    """

    config: ResolvedConfig
    counts: np.ndarray
    good: np.ndarray
    probe_modes: np.ndarray
    positions: np.ndarray
    object_init: np.ndarray
    groups: Groups
    canvas: int
    input_scale: float
    mean_total_counts: float

    @property
    def n(self) -> int:
        return int(self.counts.shape[-1])

    @property
    def num_patterns(self) -> int:
        return int(self.counts.shape[0])


def build_payload(
    counts: np.ndarray,
    bad_pixels: np.ndarray | None,
    probe_modes: np.ndarray,
    positions: np.ndarray,
    object_init: np.ndarray,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    config: ResolvedConfig | None = None,
) -> Payload:
    """Validate everything and derive groups and scales.

    Either pass a resolved ``config`` or a ``preset`` and ``overrides`` (explicit > preset >
    default). ``bad_pixels`` is True where a pixel is bad; ``None`` means all good.
    """
    counts = np.asarray(counts)
    n = _check_counts_shape(counts)
    if config is None:
        config = resolve_config(preset, overrides, n=n)
    elif config.pinn.model.n != n:
        raise InputError(
            f'the model expects {config.pinn.model.n} x {config.pinn.model.n} patterns but the '
            f'data has {n} x {n}; crop or bin the patterns in ptychodus to match the model.'
        )
    good = _check_mask(bad_pixels, n)
    probe = _check_probe(probe_modes, n)
    pos = _check_positions(positions, counts.shape[0])
    obj = _check_object(object_init)
    _check_windows(pos, n, obj.shape)
    mean_total = _check_count_values(counts, good)
    groups = group_neighbours(pos, config.pinn.model.gridsize, n)
    canvas = canvas_size(n, groups.max_offset) if groups.offsets.shape[1] > 1 else n
    scale = input_scale(counts, good)
    return Payload(
        config=config,
        counts=counts,
        good=good,
        probe_modes=probe,
        positions=pos,
        object_init=obj,
        groups=groups,
        canvas=canvas,
        input_scale=scale,
        mean_total_counts=mean_total,
    )


def _check_counts_shape(counts: np.ndarray) -> int:
    if counts.ndim != 3:
        raise InputError(
            f'diffraction patterns must be a stack (K, N, N); got shape {counts.shape}.'
        )
    if counts.shape[0] == 0:
        raise InputError('the scan is empty: there are no diffraction patterns to reconstruct.')
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise InputError(f'diffraction patterns must hold numbers; got dtype {counts.dtype}.')
    height, width = counts.shape[1:]
    if height != width:
        raise InputError(
            f'diffraction patterns are {height} x {width}; they must be square. Crop them to a '
            'square in ptychodus (Diffraction > crop) before reconstructing.'
        )
    if height not in SUPPORTED_N:
        raise InputError(
            f'{height} x {width} patterns are not supported; the network takes N in '
            f'{SUPPORTED_N}. Crop or bin the patterns in ptychodus (Diffraction > crop/bin) to '
            'one of these sizes.'
        )
    return int(height)


def _check_mask(bad_pixels: np.ndarray | None, n: int) -> np.ndarray:
    if bad_pixels is None:
        return np.ones((n, n), dtype=bool)
    bad = np.asarray(bad_pixels)
    if bad.shape != (n, n):
        raise InputError(
            f'the bad-pixel mask is {bad.shape}; it must match the patterns ({n}, {n}).'
        )
    good = ~bad.astype(bool)
    if not good.any():
        raise InputError(
            'every detector pixel is marked bad; clear the bad-pixel mask in ptychodus.'
        )
    return good


def _check_probe(probe_modes: np.ndarray, n: int) -> np.ndarray:
    probe = np.asarray(probe_modes)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3 or probe.shape[1:] != (n, n):
        raise InputError(
            f'the probe is {probe.shape}; it must be (modes, {n}, {n}) like the patterns. Resample '
            'the probe in ptychodus or crop the patterns to the probe size.'
        )
    if not np.all(np.isfinite(probe)):
        raise InputError('the probe holds NaN or Inf values; rebuild or reload the probe.')
    if not np.any(np.abs(probe) > 0):
        raise InputError('the probe is zero everywhere; initialise a probe in ptychodus first.')
    return probe.astype(np.complex64 if probe.dtype != np.complex128 else np.complex128)


def _check_positions(positions: np.ndarray, count: int) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise InputError(f'positions must be (K, 2) as (x, y) object pixels; got {pos.shape}.')
    if pos.shape[0] != count:
        raise InputError(
            f'there are {count} diffraction patterns but {pos.shape[0]} scan positions; load '
            'matching diffraction data and positions.'
        )
    if not np.all(np.isfinite(pos)):
        raise InputError('some scan positions are NaN or Inf; reload the positions.')
    return pos


def _check_object(object_init: np.ndarray) -> np.ndarray:
    obj = np.asarray(object_init)
    if obj.ndim == 3 and obj.shape[0] == 1:
        obj = obj[0]
    if obj.ndim != 2:
        raise InputError(
            f'the object must be a single layer (H, W); got shape {obj.shape}. Multi-slice '
            'objects are not supported: set the object to one layer in ptychodus.'
        )
    if not np.all(np.isfinite(obj)):
        raise InputError('the initial object holds NaN or Inf values; rebuild the object.')
    return obj.astype(np.complex64 if obj.dtype != np.complex128 else np.complex128)


def _check_windows(pos: np.ndarray, n: int, shape: tuple[int, ...]) -> None:
    start = np.floor(pos - (n - 1) / 2.0)
    height, width = shape
    outside = (start[:, 0] < 0) | (start[:, 1] < 0)
    outside |= (start[:, 0] + n > width) | (start[:, 1] + n > height)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise InputError(
            f'{int(outside.sum())} scan positions put the {n} x {n} probe window outside the '
            f'{width} x {height} object grid (first: #{k} at x={pos[k, 0]:.1f}, y={pos[k, 1]:.1f} '
            'px); enlarge the object in ptychodus or check the positions.'
        )


def _check_count_values(counts: np.ndarray, good: np.ndarray) -> float:
    """Finite, non-negative counts on good pixels; returns the mean total counts per pattern."""
    total = 0.0
    for start in range(0, counts.shape[0], CHECK_CHUNK):
        block = np.asarray(counts[start : start + CHECK_CHUNK])[:, good]
        if np.issubdtype(block.dtype, np.floating):
            if not np.all(np.isfinite(block)):
                raise InputError(
                    'diffraction patterns hold NaN or Inf on good pixels; mark those pixels bad '
                    'in ptychodus or fix the data.'
                )
        if block.size and block.min() < 0:
            raise InputError(
                'diffraction patterns hold negative counts; subtract the background with '
                'clipping at zero, or mark those pixels bad.'
            )
        total += float(block.sum(dtype=np.float64))
    mean_total = total / counts.shape[0]
    if not mean_total > 0.0:
        raise InputError('the diffraction patterns hold no counts on good pixels.')
    return mean_total
