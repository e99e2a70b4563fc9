"""Fourier ring correlation (FRC) between two reconstructions of the same sample.

Without ground truth (real data), the usual quality figure is the FRC between two
reconstructions made from independent halves of the scan (odd and even points, see
:mod:`.split`). Two reconstructions agree only up to the ambiguities ptychography cannot
measure (a sub-pixel translation, a global phase, an object amplitude scale and a linear
phase ramp when the probe is refined), and only where both were illuminated; scoring them raw
would measure those ambiguities and the untouched border, not the reconstruction. So the pair
is registered, standardised and cropped before ptychodus's own FRC
(:func:`ptychodus.api.metrics.compute_fourier_ring_correlation`) is computed.

Figures (what :func:`frc_arrays` returns):

- ``frc_auc``: ptychodus's
  :meth:`~ptychodus.api.metrics.FourierRingCorrelation.get_area_under_curve` with
  ``normalize=True``: the trapezoidal mean of the FRC curve over its rings, from the first
  non-empty ring above DC to Nyquist (``1 / (2 dx)``). 1 = identical, ~0 = uncorrelated. The
  pty-chi LSQML reference for the Siemens star (AUC 0.355, half-bit 47.7 nm) was most likely
  scored this way: its plot shows the same rings (0 to 50 / um for 10 nm pixels) and the same
  half-bit curve.
- ``frc_half_bit_nm``: the resolution (``1 / f``, interpolated between rings) where the curve
  first falls below the van Heel & Schatz half-bit threshold, searched from the first ring above
  DC; ``None`` if it never does (the whole band agrees).
- ``frc_one_seventh_nm``: the same for the fixed 1/7 threshold.
- ``frequency_per_nm``, ``correlation``, ``half_bit_threshold``: the curve, for plotting.
- ``aligned_a``, ``aligned_b``: the scored crops, ``b`` registered and standardised onto ``a``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from ptychodus.api.geometry import PixelGeometry
from ptychodus.api.illumination import IlluminationMap, compute_illumination_map
from ptychodus.api.io import load_product
from ptychodus.api.metrics import (
    FourierRingCorrelation,
    compute_fourier_ring_correlation,
    compute_illumination_scoring_region,
)
from ptychodus.api.object import ObjectCenter
from scipy.ndimage import fourier_shift
from skimage.registration import phase_cross_correlation

FrcResult = dict[str, Any]


def frc_products(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    remove_scale: bool = True,
    remove_ramp: bool = True,
    threshold_fraction: float = 0.5,
) -> FrcResult:
    """FRC between the objects of two ptychodus product files (e.g. odd and even halves).

    The region scored is where *both* products were illuminated (their probes at their
    positions; see :func:`frc_arrays`). ``pixel_size_nm`` defaults to the first product's
    object pixel width. The two objects must share one grid (same shape), as they do when
    both halves start from the same product.
    """
    product_a = load_product(Path(path_a))
    product_b = load_product(Path(path_b))
    object_a = product_a.object_.get_layer(0)
    object_b = product_b.object_.get_layer(0)
    if object_a.shape != object_b.shape:
        raise ValueError(
            f'the two objects have different grids ({object_a.shape} vs {object_b.shape}); '
            'reconstruct both halves on the same object grid'
        )
    if pixel_size_nm is None:
        pixel_size_nm = product_a.object_.get_pixel_geometry().width_m * 1e9
    illumination = (
        np.asarray(compute_illumination_map(product_a).photon_number, dtype=float),
        np.asarray(compute_illumination_map(product_b).photon_number, dtype=float),
    )
    return frc_arrays(
        object_a,
        object_b,
        pixel_size_nm,
        illumination=illumination,
        remove_scale=remove_scale,
        remove_ramp=remove_ramp,
        threshold_fraction=threshold_fraction,
    )


def frc_arrays(
    object_a: np.ndarray,
    object_b: np.ndarray,
    pixel_size_nm: float,
    *,
    illumination: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
    remove_scale: bool = True,
    remove_ramp: bool = True,
    threshold_fraction: float = 0.5,
    taper_fraction: float = 0.2,
) -> FrcResult:
    """FRC between two complex objects (H, W) on one grid of ``pixel_size_nm`` pixels.

    ``illumination``: per-pixel illumination (summed probe intensity) of each reconstruction,
    or one map for both; the scored rectangle is the largest one where every map exceeds
    ``threshold_fraction`` of its illuminated mean (ptychodus's
    :func:`~ptychodus.api.metrics.compute_illumination_scoring_region`), so un-illuminated
    borders (which hold the starting object in both and would correlate perfectly) never count.
    ``None`` scores the whole array. Inside the rectangle ``object_b`` is registered onto
    ``object_a`` (sub-pixel), its global phase (and, if asked, amplitude scale and linear phase
    ramp) is fitted to ``object_a`` and removed, and the FRC is computed with a Tukey taper.
    """
    a = np.asarray(object_a, dtype=np.complex128)
    b = np.asarray(object_b, dtype=np.complex128)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f'need two 2-D objects of one shape, got {a.shape} and {b.shape}')
    if not pixel_size_nm > 0:
        raise ValueError(f'pixel size must be positive, got {pixel_size_nm} nm')
    rows, cols, weights = _scoring_rectangle(
        a.shape, illumination, pixel_size_nm, threshold_fraction, taper_fraction
    )
    aligned_a, aligned_b = align_pair(
        a, b, rows, cols, weights, remove_scale=remove_scale, remove_ramp=remove_ramp
    )
    pixel_m = pixel_size_nm * 1e-9
    frc = compute_fourier_ring_correlation(aligned_a, aligned_b, pixel_m, pixel_m, window=weights)
    frequency_per_nm = np.asarray(frc.spatial_frequency_per_m) * 1e-9
    # Resolutions are read above DC. Ring 0 (frequency 0) is empty for a square region but holds
    # a few lowest-frequency pixels of an oblong one; ptychodus reports NaN when the curve is
    # already below the threshold there, which would read as "never falls below".
    above_dc = FourierRingCorrelation(
        spatial_frequency_per_m=np.asarray(frc.spatial_frequency_per_m)[1:],
        correlation=np.asarray(frc.correlation)[1:],
        pixels_per_ring=np.asarray(frc.pixels_per_ring)[1:],
    )
    return {
        'frc_auc': float(frc.get_area_under_curve()),
        'frc_half_bit_nm': _nm_or_none(above_dc.get_resolution_m_at_bit_threshold(0.5)),
        'frc_one_seventh_nm': _nm_or_none(above_dc.get_resolution_m(1.0 / 7.0)),
        'frequency_per_nm': frequency_per_nm,
        'correlation': np.asarray(frc.correlation, dtype=float),
        'half_bit_threshold': np.asarray(frc.get_bit_threshold_curve(0.5), dtype=float),
        'aligned_a': aligned_a,
        'aligned_b': aligned_b,
    }


def align_pair(
    object_a: np.ndarray,
    object_b: np.ndarray,
    rows: slice,
    cols: slice,
    weights: np.ndarray,
    *,
    remove_scale: bool = True,
    remove_ramp: bool = True,
    passes: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops ``(a, b')`` of the rectangle ``rows, cols``, where ``b'`` is ``object_b`` shifted
    onto ``object_a`` and standardised to it (phase, optionally scale and ramp).

    Translation and ramp bias each other's estimate, so they are alternated for a few passes
    (as ptychodus's ``compute_object_comparison`` does); ``b`` is interpolated once per pass
    from the original, by a Fourier shift of the whole array (the wrap-around lies outside the
    illuminated rectangle).
    """
    crop_a = object_a[rows, cols]
    shift = np.zeros(2)
    factor = np.ones_like(crop_a)
    crop_b = object_b[rows, cols]
    for _ in range(passes):
        reference = crop_a - np.sum(weights * crop_a) / np.sum(weights)
        moving = crop_b * factor
        moving = moving - np.sum(weights * moving) / np.sum(weights)
        residual, _, _ = phase_cross_correlation(
            reference * weights, moving * weights, upsample_factor=100, normalization=None
        )
        shift = shift + residual
        shifted = np.fft.ifft2(fourier_shift(np.fft.fft2(object_b), shift))
        crop_b = shifted[rows, cols]
        factor = _ambiguity_factor(crop_a, crop_b, weights, remove_scale, remove_ramp)
        if float(np.hypot(*residual)) < 0.01:
            break
    return crop_a, crop_b * factor


def _ambiguity_factor(
    a: np.ndarray, b: np.ndarray, weights: np.ndarray, remove_scale: bool, remove_ramp: bool
) -> np.ndarray:
    """Complex factor ``s exp(i(phi + kx x + ky y))`` that best maps ``b`` onto ``a``.

    The ramp comes from weighted sums of neighbour phase differences of ``a conj(b)`` (no
    unwrapping needed), the offset from its weighted circular mean, the scale by least squares.
    """
    signal = a * np.conj(b)
    height, width = a.shape
    y, x = np.mgrid[0:height, 0:width].astype(float)
    kx = ky = 0.0
    if remove_ramp:
        wx = weights[:, 1:] * weights[:, :-1]
        wy = weights[1:, :] * weights[:-1, :]
        kx = float(np.angle(np.sum(wx * signal[:, 1:] * np.conj(signal[:, :-1]))))
        ky = float(np.angle(np.sum(wy * signal[1:, :] * np.conj(signal[:-1, :]))))
    ramp = np.exp(1j * (kx * x + ky * y))
    phi = float(np.angle(np.sum(weights * signal * np.conj(ramp))))
    factor = ramp * np.exp(1j * phi)
    if remove_scale:
        denominator = float(np.sum(weights * np.abs(b) ** 2))
        if denominator > 0:
            factor = (
                factor * float(np.real(np.sum(weights * signal * np.conj(factor)))) / denominator
            )
    return factor


def _scoring_rectangle(
    shape: tuple[int, ...],
    illumination: tuple[np.ndarray, np.ndarray] | np.ndarray | None,
    pixel_size_nm: float,
    threshold_fraction: float,
    taper_fraction: float,
) -> tuple[slice, slice, np.ndarray]:
    """The rectangle illuminated in both reconstructions and its Tukey weights."""
    height, width = int(shape[0]), int(shape[1])
    if illumination is None:
        maps: list[np.ndarray] = []
    elif isinstance(illumination, np.ndarray):
        maps = [illumination]
    else:
        maps = list(illumination)
    if not maps:
        combined = np.ones((height, width))
    else:
        normalised = []
        for item in maps:
            values = np.asarray(item, dtype=float)
            if values.shape != (height, width):
                raise ValueError(f'illumination {values.shape} does not match {(height, width)}')
            lit = values > 0
            if not lit.any():
                raise ValueError('an illumination map carries no photons')
            normalised.append(values / values[lit].mean())
        # Lit in both = the weaker of the two (each relative to its own mean).
        combined = np.minimum.reduce(normalised)
    pixel = PixelGeometry(width_m=pixel_size_nm * 1e-9, height_m=pixel_size_nm * 1e-9)
    region = compute_illumination_scoring_region(
        IlluminationMap(
            photon_number=combined,
            photon_flux_per_s=0.0,
            photon_energy_J=0.0,
            exposure_time_s=1.0,
            mass_attenuation_m2_per_kg=0.0,
            pixel_geometry=pixel,
            center=ObjectCenter(x_m=0.0, y_m=0.0),
        ),
        (height, width),
        threshold_fraction=threshold_fraction,
        taper_fraction=taper_fraction,
    )
    rows = slice(region.row_begin, region.row_end)
    cols = slice(region.column_begin, region.column_end)
    return rows, cols, np.asarray(region.weights, dtype=float)


def _nm_or_none(resolution_m: float) -> float | None:
    return None if not math.isfinite(resolution_m) else float(resolution_m * 1e9)


def plot_frc(result: FrcResult, path: str | os.PathLike[str], title: str = '') -> Path:
    """Write the two aligned objects (amplitude and phase) and the FRC curve with its
    half-bit threshold to a PNG (headless, Agg backend)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(12, 6.5))
    grid = figure.add_gridspec(2, 3)
    images = [('A', result.get('aligned_a')), ('B', result.get('aligned_b'))]
    for row, (name, image) in enumerate(images):
        if image is None:
            continue
        for col, (kind, values, cmap) in enumerate(
            (('amplitude', np.abs(image), 'gray'), ('phase', np.angle(image), 'twilight'))
        ):
            axis = figure.add_subplot(grid[row, col])
            axis.imshow(values, cmap=cmap)
            axis.set_title(f'{name}: {kind}', fontsize=9)
            axis.set_axis_off()
    axis = figure.add_subplot(grid[:, 2])
    frequency_per_um = np.asarray(result['frequency_per_nm']) * 1e3
    axis.plot(frequency_per_um, result['correlation'], label='FRC')
    axis.plot(frequency_per_um, result['half_bit_threshold'], '--', label='half-bit')
    half_bit = result['frc_half_bit_nm']
    resolution = 'none' if half_bit is None else f'{half_bit:.1f} nm'
    axis.set_title(f'AUC {result["frc_auc"]:.3f}, half-bit {resolution}', fontsize=9)
    axis.set_xlabel('spatial frequency (1/um)')
    axis.set_ylim(-0.1, 1.05)
    axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, dpi=90)
    plt.close(figure)
    return target
