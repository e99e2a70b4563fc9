"""Arrays + configuration -> a validated payload: the single seam between a host and the engine.

Everything the engine relies on is checked here, before any heavy work, and each failure says
what is wrong and what to do. Counts stay in their source dtype (a uint16 scan is not copied to
float); the engine converts one batch at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SUPPORTED_N, ResolvedConfig, resolve_config
from .data.grouping import Groups, group_neighbours
from .data.scaling import input_scale
from .device import resolve_device
from .errors import InputError
from .physics.propagation import fresnel_chirp
from .physics.translate import canvas_size

logger = logging.getLogger(__name__)

CHECK_CHUNK = 512
SIZE_HINT = (
    "ptychodus's Open Dataset wizard (Processing page: Crop, Bin Pixels, Pad; in a settings file: "
    '[Diffraction] CropWidthInPixels, CropHeightInPixels, BinningEnabled, BinSizeX, BinSizeY)'
)
"""Where a beamline user changes the pattern size in ptychodus."""


@dataclass(frozen=True)
class Payload:
    """Validated inputs for the engine, all in object-pixel units.

    ``positions`` are (x, y) = (column, row) object pixels where the probe centre lands;
    ``object_init`` is the object grid (H, W) and the values kept where nothing is lit.
    ``probe_modes`` is the illumination in the object plane (ptychodus's probe);
    ``fresnel_number`` the detector's per-pixel Fresnel numbers (x, y), whose chirp the
    far-field model applies to every exit wave (``physics.propagation.fresnel_chirp``).
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
    fresnel_number: tuple[float, float] = (0.0, 0.0)

    @property
    def n(self) -> int:
        return int(self.counts.shape[-1])

    @property
    def chirp(self) -> np.ndarray | None:
        """The Fresnel chirp every window's exit wave carries (N, N); None: Fraunhofer."""
        return fresnel_chirp(self.n, self.fresnel_number)

    @property
    def physics_probe(self) -> np.ndarray:
        """The exit-wave illumination of an unshifted window: ``probe_modes`` times the chirp
        (what a pretrained model's probe fingerprint is taken of)."""
        chirp = self.chirp
        if chirp is None:
            return self.probe_modes
        return (self.probe_modes * chirp).astype(self.probe_modes.dtype)

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
    fresnel_number: tuple[float, float] = (0.0, 0.0),
) -> Payload:
    """Validate everything and derive groups and scales.

    Either pass a resolved ``config`` or a ``preset`` and ``overrides`` (explicit > preset >
    default). ``bad_pixels`` is True where a pixel is bad; ``None`` means all good.
    ``fresnel_number``: the detector's per-pixel Fresnel numbers ``dx**2 / (lambda z)`` (x, y);
    (0, 0) is the Fraunhofer model.
    """
    counts = np.asarray(counts)
    n = _check_counts_shape(counts)
    if config is None:
        config = resolve_config(preset, overrides, n=n)
    elif config.pinn.model.n != n:
        raise InputError(
            f'the model expects {config.pinn.model.n} x {config.pinn.model.n} patterns but the '
            f'data has {n} x {n}; crop or bin the patterns to {config.pinn.model.n} x '
            f'{config.pinn.model.n} in {SIZE_HINT}, or use a model made for {n} x {n} patterns.'
        )
    resolve_device(config.execution.device)  # a device torch cannot see fails before any work
    good = _check_mask(bad_pixels, n)
    probe = _check_probe(probe_modes, n)
    pos = _check_positions(positions, counts.shape[0])
    obj = _check_object(object_init)
    _check_windows(pos, n, obj.shape)
    _check_distinct(pos)
    mean_total = _check_count_values(counts, good)
    fresnel = _check_fresnel(fresnel_number)
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
        fresnel_number=fresnel,
    )


def _check_fresnel(fresnel_number: tuple[float, float]) -> tuple[float, float]:
    values = tuple(float(v) for v in np.asarray(fresnel_number, dtype=float).reshape(-1))
    if len(values) != 2 or not all(np.isfinite(v) for v in values):
        raise InputError(
            f'fresnel_number = {fresnel_number!r} is not allowed; expected two finite numbers '
            '(x, y), dx**2 / (wavelength x detector distance): check the photon energy, the '
            'detector distance and the pixel sizes in the product.'
        )
    return values[0], values[1]


def _check_counts_shape(counts: np.ndarray) -> int:
    if counts.ndim != 3:
        raise InputError(
            f'diffraction patterns must be a stack (K, N, N); got shape {counts.shape}. Load '
            'the scan as assembled diffraction data in ptychodus.'
        )
    if counts.shape[0] == 0:
        raise InputError(
            'the scan is empty: there are no diffraction patterns to reconstruct. Load the '
            "scan's diffraction data in ptychodus (Open Dataset) and check that its pattern "
            'indexes match the scan positions.'
        )
    if counts.shape[0] == 1:
        raise InputError(
            'the scan has a single diffraction pattern; ptychography needs many overlapping '
            'patterns from different scan positions. Load the whole scan.'
        )
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise InputError(
            f'diffraction patterns must hold counts (integers or floats); got dtype '
            f'{counts.dtype}. Load the measured intensities, not amplitudes or masks.'
        )
    height, width = counts.shape[1:]
    if height != width:
        side = _crop_size(min(height, width))
        raise InputError(
            f'diffraction patterns are {height} x {width} (rows x columns); they must be '
            f'square. Crop them to {side} x {side} around the beam centre in {SIZE_HINT}.'
        )
    if height not in SUPPORTED_N:
        raise InputError(
            f'{height} x {width} patterns are not supported; the network takes '
            f'{_sizes_text()} pixels. {_resize_advice(int(height))} in {SIZE_HINT}, then '
            'rebuild the probe and object for the new size.'
        )
    return int(height)


def _sizes_text() -> str:
    sizes = [str(n) for n in SUPPORTED_N]
    return ', '.join(sizes[:-1]) + ' or ' + sizes[-1]


def _crop_size(n: int) -> int:
    """The largest supported size that a crop of ``n`` pixels can reach (or the smallest)."""
    fitting = [s for s in SUPPORTED_N if s <= n]
    return fitting[-1] if fitting else SUPPORTED_N[0]


def _resize_advice(n: int) -> str:
    if n < SUPPORTED_N[0]:
        return f'Pad them to {SUPPORTED_N[0]} x {SUPPORTED_N[0]}'
    crop = _crop_size(n)
    text = f'Crop them to {crop} x {crop} around the beam centre'
    if n // 2 >= SUPPORTED_N[0]:
        binned = _crop_size(n // 2)
        text += f' (or bin 2 x 2 and crop to {binned} x {binned} for a faster, coarser run)'
    return text


def _check_mask(bad_pixels: np.ndarray | None, n: int) -> np.ndarray:
    if bad_pixels is None:
        return np.ones((n, n), dtype=bool)
    bad = np.asarray(bad_pixels)
    if bad.shape != (n, n):
        raise InputError(
            f'the bad-pixel mask is {bad.shape}; it must match the patterns ({n}, {n}). Load '
            'the mask that belongs to this detector, or crop/bin it with the patterns.'
        )
    good = ~bad.astype(bool)
    if not good.any():
        raise InputError(
            'every detector pixel is marked bad, so there is nothing to fit. Check the '
            "detector's bad-pixel mask in the data file (True means bad) and load the data "
            'again with a mask that marks only the bad pixels.'
        )
    return good


def _check_probe(probe_modes: np.ndarray, n: int) -> np.ndarray:
    probe = np.asarray(probe_modes)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3 or probe.shape[1:] != (n, n):
        size = ' x '.join(str(d) for d in probe.shape[-2:]) if probe.ndim >= 2 else 'not 2-D'
        raise InputError(
            f'the probe is {size} pixels (array {probe.shape}) but the patterns are {n} x {n}; '
            'the probe must be sampled like the patterns. In ptychodus, build the probe after '
            'loading (and cropping or binning) the patterns (Probe: Edit), or load the probe '
            'that belongs to these patterns.'
        )
    if not np.all(np.isfinite(probe)):
        raise InputError(
            'the probe holds NaN or Inf values; rebuild it in ptychodus (Probe: Edit) or '
            'load a valid probe.'
        )
    if not np.any(np.abs(probe) > 0):
        raise InputError(
            'the probe is zero everywhere; initialise a probe in ptychodus first (Probe: Edit, '
            'e.g. a zone plate or a disk) or load one from a previous reconstruction.'
        )
    return probe.astype(np.complex64 if probe.dtype != np.complex128 else np.complex128)


def _check_positions(positions: np.ndarray, count: int) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise InputError(f'positions must be (K, 2) as (x, y) object pixels; got {pos.shape}.')
    if pos.shape[0] != count:
        raise InputError(
            f'there are {count} diffraction patterns but {pos.shape[0]} scan positions; every '
            'pattern needs its position. Load the positions that belong to this diffraction '
            'data (ptychodus pairs them by scan index).'
        )
    if not np.all(np.isfinite(pos)):
        bad = int((~np.isfinite(pos).all(axis=1)).sum())
        raise InputError(
            f'{bad} scan positions are NaN or Inf; reload the scan positions in ptychodus.'
        )
    return pos


def _check_object(object_init: np.ndarray) -> np.ndarray:
    obj = np.asarray(object_init)
    if obj.ndim == 3 and obj.shape[0] == 1:
        obj = obj[0]
    if obj.ndim != 2:
        raise single_layer_error(
            f'{obj.shape[0]} layers' if obj.ndim == 3 else f'shape {obj.shape}'
        )
    if not np.all(np.isfinite(obj)):
        raise InputError(
            'the initial object holds NaN or Inf values; rebuild it in ptychodus (Object: Edit).'
        )
    return obj.astype(np.complex64 if obj.dtype != np.complex128 else np.complex128)


def single_layer_error(layers: str) -> InputError:
    """The error for a multi-layer object (``layers``: e.g. '2 layers'); hosts raise it too."""
    return InputError(
        f'the object has {layers}; PINN reconstructs a single-layer (thin) object. Set the '
        'number of object layers to 1 in ptychodus (Object: Edit, Number of Layers) before '
        'reconstructing.'
    )


def _check_windows(pos: np.ndarray, n: int, shape: tuple[int, ...]) -> None:
    start = np.floor(pos - (n - 1) / 2.0)
    height, width = shape
    outside = (start[:, 0] < 0) | (start[:, 1] < 0)
    outside |= (start[:, 0] + n > width) | (start[:, 1] + n > height)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise InputError(
            f'{int(outside.sum())} of {len(pos)} scan positions put the {n} x {n} probe window '
            f'outside the {width} x {height} object grid (first: #{k} at x={pos[k, 0]:.1f}, '
            f'y={pos[k, 1]:.1f} px). Rebuild the object in ptychodus after loading these '
            'positions so its grid covers the scan (Object: Edit; Extra Padding adds room), '
            'or check the positions and their units.'
        )


def _check_distinct(pos: np.ndarray) -> None:
    """All positions equal is a broken position file; some repeats are allowed (warned)."""
    distinct = len(np.unique(pos, axis=0))
    if distinct == 1:
        raise InputError(
            f'all {len(pos)} scan positions are the same point (x={pos[0, 0]:.1f}, '
            f'y={pos[0, 1]:.1f} px), so the patterns do not overlap in a scan. The positions '
            'were probably not read correctly: reload them in ptychodus and check their units.'
        )
    if distinct < len(pos):
        logger.warning(
            '%d of %d scan positions repeat an earlier position; they are used as repeated '
            'measurements of the same spot. Check the positions if that is unexpected.',
            len(pos) - distinct,
            len(pos),
        )


def _check_count_values(counts: np.ndarray, good: np.ndarray) -> float:
    """Finite, non-negative counts on good pixels; returns the mean total counts per pattern."""
    total = 0.0
    for start in range(0, counts.shape[0], CHECK_CHUNK):
        block = np.asarray(counts[start : start + CHECK_CHUNK])
        values = block[:, good]
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            _raise_bad_values(counts, good, start, 'NaN or Inf', lambda a: ~np.isfinite(a))
        if values.size and values.min() < 0:
            _raise_bad_values(counts, good, start, 'negative counts', lambda a: a < 0)
        total += float(values.sum(dtype=np.float64))
    mean_total = total / counts.shape[0]
    if not mean_total > 0.0:
        raise InputError(
            'the diffraction patterns hold no counts on good pixels (all zero); load the '
            'measured data, and check the bad-pixel mask and any value filter in ptychodus.'
        )
    return mean_total


def _raise_bad_values(
    counts: np.ndarray, good: np.ndarray, start: int, what: str, test: Any
) -> None:
    """Count the offending good pixels over the whole scan and say where the first one is."""
    pixels = 0
    patterns = 0
    first: tuple[int, int, int] | None = None
    for begin in range(start, counts.shape[0], CHECK_CHUNK):
        block = np.asarray(counts[begin : begin + CHECK_CHUNK])
        hits = test(block) & good
        pixels += int(hits.sum())
        patterns += int(hits.any(axis=(1, 2)).sum())
        if first is None and hits.any():
            k, row, col = (int(i) for i in np.argwhere(hits)[0])
            first = (begin + k, row, col)
    assert first is not None
    where = f'pattern #{first[0]}, row {first[1]}, column {first[2]}'
    if what == 'NaN or Inf':
        advice = (
            'Mark those detector pixels bad (bad pixels are ignored) or repair the data; a '
            "Value Upper Bound in ptychodus's Value Filter (Open Dataset wizard, Processing "
            'page) zeroes Inf values.'
        )
    else:
        advice = (
            'Counts cannot be negative: if a background was subtracted, clip at zero, e.g. '
            "with ptychodus's Value Filter, Value Lower Bound 0 (Open Dataset wizard, "
            'Processing page), or mark those pixels bad.'
        )
    raise InputError(
        f'diffraction patterns hold {what} at {_count(pixels, "good pixel")} in '
        f'{_count(patterns, "pattern")} (first: {where}). {advice}'
    )


def _count(number: int, noun: str) -> str:
    return f'{number} {noun}' + ('' if number == 1 else 's')
