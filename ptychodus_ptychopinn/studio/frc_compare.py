"""Compare two finished reconstructions: aligned objects, their difference and the FRC.

Qt-free. Sources are ptychodus product files or run directories (their ``result`` record's
``output`` product when it exists, else ``snapshot.npz``). Two products on the same pixel grid
go through :func:`ptychodus.api.metrics.compute_object_comparison` (sub-pixel registration
and removal of the global complex scale and phase ramp, which no reconstruction can measure);
otherwise the arrays are centre-cropped to a common shape and only the global complex scale
is removed. The FRC is ptychodus's :func:`compute_fourier_ring_correlation`, on the region
both scans lit when the probe and positions are known.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import EVENTS_FILE, RunDirReader


@dataclass(frozen=True)
class Source:
    """One side of a comparison."""

    path: Path
    label: str
    object: np.ndarray
    product: Any = None
    """The ptychodus Product when the source is (or names) a product file."""


@dataclass(frozen=True)
class Comparison:
    reference: np.ndarray
    test: np.ndarray
    """``test`` aligned onto ``reference`` with the ambiguities removed (same shape)."""
    difference: np.ndarray
    frequency: np.ndarray
    """Ring left edges, in 1/m when ``pixel_size_m`` is known, else in 1/pixel."""
    correlation: np.ndarray
    half_bit: np.ndarray
    area_under_curve: float
    resolution: float
    """Half-bit resolution in metres (or pixels), NaN when the curve never crosses."""
    pixel_size_m: float | None
    region: tuple[int, int, int, int]
    aligned: bool
    """True when ptychodus registered the objects and removed the phase ramp."""

    def summary(self) -> str:
        if self.pixel_size_m:
            res = f'{self.resolution * 1e9:.1f} nm' if np.isfinite(self.resolution) else 'n/a'
        else:
            res = f'{self.resolution:.2f} px' if np.isfinite(self.resolution) else 'n/a'
        rms = float(np.sqrt(np.mean(np.abs(self.difference) ** 2)))
        how = 'registered, ambiguities removed' if self.aligned else 'global scale removed'
        return (
            f'FRC AUC {self.area_under_curve:.3f}, half-bit resolution {res}, '
            f'RMS difference {rms:.4g} ({how}; region {self.region[1] - self.region[0]} x '
            f'{self.region[3] - self.region[2]} px)'
        )


def load_source(path: str | os.PathLike[str]) -> Source:
    """A product file (.h5) or a run directory -> its object (and product when there is one)."""
    source = Path(path)
    if source.is_dir():
        if not (source / EVENTS_FILE).exists() and not (source / 'snapshot.npz').exists():
            raise ValueError(f'{source} is not a run directory (no events.jsonl, no snapshot.npz)')
        output = _result_output(source)
        if output is not None and output.is_file():
            return _product_source(output, label=f'{source.name} ({output.name})')
        snapshot = RunDirReader(source).latest_snapshot()
        if snapshot is None:
            raise ValueError(f'{source} has no readable snapshot.npz and no output product')
        return Source(source, source.name, np.asarray(snapshot.object))
    if not source.is_file():
        raise ValueError(f'{source} does not exist')
    return _product_source(source, label=source.name)


def _product_source(path: Path, label: str) -> Source:
    from ptychodus.api.io import load_product

    product = load_product(path)
    return Source(path, label, np.asarray(product.object_.get_layer(0)), product)


def _result_output(directory: Path) -> Path | None:
    try:
        lines = (directory / EVENTS_FILE).read_text(encoding='utf-8').splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get('event') == 'result' and record.get('output'):
            out = Path(record['output'])
            return out if out.is_absolute() else directory / out
    return None


def compare(reference: Source, test: Source) -> Comparison:
    """Align ``test`` onto ``reference`` and compute the difference and the FRC."""
    from ptychodus.api.metrics import compute_fourier_ring_correlation

    ref_product, test_product = reference.product, test.product
    aligned = False
    pixel_size: float | None = None
    region: tuple[int, int, int, int] | None = None
    same_grid = (
        ref_product is not None
        and test_product is not None
        and ref_product.object_.get_pixel_geometry() == test_product.object_.get_pixel_geometry()
    )
    if same_grid:
        from ptychodus.api.metrics import compute_object_comparison

        result = compute_object_comparison(ref_product, test_product)
        ref = np.asarray(result.reference_complex)
        tst = np.asarray(result.test_complex)
        geometry = result.pixel_geometry
        pixel_size = float(geometry.width_m)
        aligned = True
        region = _lit_region(ref_product, ref.shape)
    else:
        ref, tst = _crop_common(reference.object, test.object)
        tst = tst * _complex_scale(ref, tst)
    if region is None:
        region = (0, ref.shape[0], 0, ref.shape[1])
    r0, r1, c0, c1 = region
    ref, tst = ref[r0:r1, c0:c1], tst[r0:r1, c0:c1]
    width = pixel_size if pixel_size else 1.0
    frc = compute_fourier_ring_correlation(ref, tst, width, width, workers=1)
    freq = np.asarray(frc.spatial_frequency_per_m, float)
    return Comparison(
        reference=ref,
        test=tst,
        difference=tst - ref,
        frequency=freq,
        correlation=np.asarray(frc.correlation, float),
        half_bit=np.asarray(frc.get_bit_threshold_curve(0.5), float),
        area_under_curve=frc.get_area_under_curve(),
        resolution=frc.get_resolution_m_at_bit_threshold(0.5),
        pixel_size_m=pixel_size,
        region=region,
        aligned=aligned,
    )


def _crop_common(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height = min(a.shape[-2], b.shape[-2])
    width = min(a.shape[-1], b.shape[-1])

    def crop(x: np.ndarray) -> np.ndarray:
        r = (x.shape[-2] - height) // 2
        c = (x.shape[-1] - width) // 2
        return np.asarray(x[r : r + height, c : c + width], np.complex128)

    return crop(a), crop(b)


def _complex_scale(ref: np.ndarray, test: np.ndarray) -> complex:
    """Least-squares ``s`` minimising ``|s * test - ref|``: removes the global scale and phase."""
    norm = np.vdot(test, test)
    return complex(np.vdot(test, ref) / norm) if abs(norm) > 0 else 1.0


def _lit_region(product: Any, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Rows/columns both scans lit (ptychodus's illumination scoring region), if computable."""
    try:
        from ..plugin.simulation import scoring_region

        r0, r1, c0, c1 = scoring_region(product, region='illumination')
    except Exception:  # noqa: BLE001 - a missing probe or positions: use the whole object
        return None
    if r1 > shape[0] or c1 > shape[1] or r1 - r0 < 8 or c1 - c0 < 8:
        return None
    return r0, r1, c0, c1
