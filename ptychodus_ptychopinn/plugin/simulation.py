"""Simulated ptychography scans with a known truth, built only from ptychodus's own API.

This module is part of the ptychodus adapter (it imports ptychodus freely). It makes
test and benchmark data the way ptychodus itself would: a zone-plate probe from
:mod:`ptychodus.api.simulate.probe`, an object from :mod:`ptychodus.api.simulate.object`,
a scan from :mod:`ptychodus.api.simulate.probe_positions`, and diffraction from
:func:`ptychodus.api.simulate.diffraction.generate_diffraction_data`. Scoring uses the
ambiguity removal, illumination region and SSIM/PSNR of :mod:`ptychodus.api.metrics`.

Photon scaling (DESIGN section 3): ptychodus's simulator conserves power in physical
units, ``sum(pattern) = (dx_obj / dx_det)**2 * sum |P O|**2``, so it is fed the probe
multiplied by ``dx_det / dx_obj``; the product keeps the unscaled probe, normalised
ptychodus's way (``sum |P|**2 == metadata.probe_photon_count``). With that probe the
true object predicts the counts with an intensity scale of 1:
``counts_k ~ Poisson(|fftshift(fft2(P * O_k, norm='ortho'))|**2)`` where ``O_k`` starts at
object pixel ``r_k - (N - 1) / 2``.

``photons_per_pattern`` is the mean *detected* count per pattern (before noise); the
incident count ``probe_photon_count`` is larger by the mean object transmission.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy
from ptychodus.api.assemble import AssembledDiffractionData
from ptychodus.api.constants import energy_eV_to_wavelength_m
from ptychodus.api.geometry import ImageExtent, PixelGeometry
from ptychodus.api.illumination import compute_illumination_map
from ptychodus.api.io import (
    StandardFileLayout,
    load_product,
    save_diffraction_data,
    save_product,
)
from ptychodus.api.metrics import (
    ScoringRegion,
    compute_illumination_scoring_region,
    compute_peak_signal_to_noise_ratio,
    compute_structural_similarity,
    estimate_reconstruction_ambiguities,
)
from ptychodus.api.object import Object, ObjectGeometry, resample_object
from ptychodus.api.probe import Probe, ProbeGeometry, ProbeSequence
from ptychodus.api.probe_positions import (
    ProbePosition,
    ProbePositionSequence,
    calculate_scan_geometry,
)
from ptychodus.api.product import Product, ProductMetadata
from ptychodus.api.simulate.diffraction import generate_diffraction_data
from ptychodus.api.simulate.object import (
    generate_dead_leaves_object,
    generate_fractal_noise_object,
    generate_siemens_star_object,
    generate_uniform_object,
)
from ptychodus.api.simulate.probe import (
    FresnelZonePlate,
    generate_fresnel_zone_plate_probe,
    generate_incoherent_probe_modes,
    rescale_probe_intensity,
)
from ptychodus.api.simulate.probe_positions import (
    generate_cartesian_probe_positions,
    generate_spiral_probe_positions,
)
from scipy.spatial import cKDTree

__all__ = [
    'OBJECT_KINDS',
    'SCAN_KINDS',
    'SimulatedScan',
    'load_truth',
    'save_layout',
    'score_object',
    'scoring_region',
    'simulate_scan',
]

logger = logging.getLogger(__name__)

OBJECT_KINDS = ('fractal', 'siemens_star', 'dead_leaves')
SCAN_KINDS = ('spiral', 'raster')

TRUTH_FILE_NAME = 'truth.h5'

_UINT16_MAX = numpy.iinfo(numpy.uint16).max


@dataclass(frozen=True)
class SimulatedScan:
    """A simulated scan: ptychodus objects plus plain numpy views of the same data.

    ``product`` is what a reconstructor receives: the true probe, the true positions and,
    as object, the *initial guess* (ones) on the truth's grid. ``truth`` is the true
    object on that same grid (same shape, pixel geometry and centre).
    """

    diffraction: AssembledDiffractionData
    product: Product
    truth: Object
    counts: numpy.ndarray
    """(K, N, N) counts, DC at the array centre; the same array as ``diffraction``'s."""
    bad_pixels: numpy.ndarray
    """(N, N) bool, True = bad."""
    probe_modes: numpy.ndarray
    """(M, N, N) complex true probe, ``sum |P|**2 == probe_photon_count``."""
    positions_px: numpy.ndarray
    """(K, 2) float (x = column, y = row) in object pixels: where probe pixel (N-1)/2 lands."""
    truth_array: numpy.ndarray
    """(H, W) complex true object."""

    @property
    def truth_product(self) -> Product:
        """``product`` with the true object in place of the initial guess."""
        return replace(self.product, object_=self.truth)

    @property
    def probe_photon_count(self) -> float:
        return self.product.metadata.probe_photon_count

    @property
    def object_pixel_size_m(self) -> float:
        return self.truth.get_pixel_geometry().width_m


# --------------------------------------------------------------------------- simulation


def _scan_positions(
    kind: str,
    num_positions: int,
    step_px: float,
    pixel_size_m: float,
    jitter_px: float,
    rng: numpy.random.Generator,
) -> ProbePositionSequence:
    if kind == 'spiral':
        # Fermat spiral; scale it so the median nearest-neighbour distance is step_px.
        median_nn = 1.0
        if num_positions > 1:
            unit = generate_spiral_probe_positions(num_positions, 1.0)
            xy = numpy.array([(p.x_m, p.y_m) for p in unit])
            distances, _ = cKDTree(xy).query(xy, k=2)
            median_nn = float(numpy.median(distances[:, 1]))
        points = list(
            generate_spiral_probe_positions(num_positions, step_px * pixel_size_m / median_nn)
        )
    elif kind == 'raster':
        nx = math.ceil(math.sqrt(num_positions))
        ny = math.ceil(num_positions / nx)
        step_m = step_px * pixel_size_m
        points = list(generate_cartesian_probe_positions(nx, ny, step_m, step_m))[:num_positions]
    else:
        raise ValueError(f'Unknown scan_kind {kind!r}; expected one of {SCAN_KINDS}')

    if jitter_px > 0.0:
        offsets = rng.uniform(-jitter_px, jitter_px, size=(len(points), 2)) * pixel_size_m
        points = [
            ProbePosition(index=p.index, x_m=p.x_m + dx, y_m=p.y_m + dy)
            for p, (dx, dy) in zip(points, offsets)
        ]

    return ProbePositionSequence(points)


def _truth_object(
    kind: str, geometry: ObjectGeometry, pattern_size: int, rng: numpy.random.Generator
) -> Object:
    """Amplitude in [0.5, 1], phase in [-1, 1] rad, structure at several scales."""
    if kind == 'fractal':
        noise = generate_fractal_noise_object(
            rng, geometry, grid_scale_px=pattern_size / 2, num_octaves=4
        ).get_array()[0]
        re, im = noise.real, noise.imag
        amplitude = 0.75 + 0.25 * re / numpy.max(numpy.abs(re))
        phase = im / numpy.max(numpy.abs(im))
        array = amplitude * numpy.exp(1j * phase)
    elif kind == 'siemens_star':
        array = generate_siemens_star_object(
            geometry,
            num_spokes=16,
            outer_radius_fraction=0.95,
            spoke_amplitude=0.5,
            background_amplitude=1.0,
            spoke_phase_tr=0.8 / (2 * numpy.pi),
            background_phase_tr=-0.2 / (2 * numpy.pi),
        ).get_array()[0]
    elif kind == 'dead_leaves':
        # Sharp-edged disks; slow (seconds) and chatty at INFO, so quieten its logger.
        object_logger = logging.getLogger('ptychodus.api.simulate.object')
        level = object_logger.level
        object_logger.setLevel(logging.WARNING)
        try:
            array = generate_dead_leaves_object(
                rng,
                geometry,
                leaf_radius_lower_px=pattern_size / 16,
                leaf_radius_upper_px=pattern_size / 2,
                leaf_radius_power_law_exponent=3.0,
                leaf_amplitude_lower=0.5,
                leaf_amplitude_upper=1.0,
                leaf_phase_lower_tr=-1.0 / (2 * numpy.pi),
                leaf_phase_upper_tr=1.0 / (2 * numpy.pi),
            ).get_array()[0]
        finally:
            object_logger.setLevel(level)
    else:
        raise ValueError(f'Unknown object_kind {kind!r}; expected one of {OBJECT_KINDS}')

    return Object(
        array=numpy.asarray(array, dtype=numpy.complex128)[numpy.newaxis],
        pixel_geometry=geometry.get_pixel_geometry(),
        center=geometry.get_center(),
    )


def _zone_plate_probe(
    probe_geometry: ProbeGeometry,
    wavelength_m: float,
    probe_diameter_fraction: float,
    zone_plate: FresnelZonePlate | None,
    defocus_m: float | None,
) -> Probe:
    dx = probe_geometry.pixel_width_m
    n = probe_geometry.width_px

    if zone_plate is None:
        # Outermost zone = 2 object pixels: the focus is ~2 px and the illumination cone
        # fills half the detector width (no aliasing), whatever N is.
        zone_plate = FresnelZonePlate(
            zone_plate_diameter_m=160e-6,
            outermost_zone_width_m=2.0 * dx,
            central_beamstop_diameter_m=40e-6,
        )

    if defocus_m is None:
        # Geometric beam diameter 2 * NA * defocus = probe_diameter_fraction * N * dx.
        numerical_aperture = zone_plate.get_numerical_aperture(wavelength_m)
        defocus_m = probe_diameter_fraction * n * dx / (2.0 * numerical_aperture)

    return generate_fresnel_zone_plate_probe(
        probe_geometry, zone_plate, photon_wavelength_m=wavelength_m, defocus_distance_m=defocus_m
    )


def _patch_window_ok(positions_px: numpy.ndarray, n: int, height: int, width: int) -> bool:
    start = numpy.floor(positions_px - (n - 1) / 2)
    return bool(
        numpy.all(start >= 0)
        and numpy.all(start[:, 0] + n + 1 <= width)
        and numpy.all(start[:, 1] + n + 1 <= height)
    )


def simulate_scan(
    *,
    pattern_size: int = 64,
    num_positions: int = 500,
    photons_per_pattern: float = 1e6,
    seed: int = 0,
    object_kind: str = 'fractal',
    phase_range_rad: float = 2.0,
    scan_kind: str = 'spiral',
    step_px: float | None = None,
    position_jitter_px: float = 0.0,
    probe_diameter_fraction: float = 0.3,
    zone_plate: FresnelZonePlate | None = None,
    defocus_m: float | None = None,
    num_probe_modes: int = 1,
    photon_energy_eV: float = 10_000.0,  # noqa: N803
    detector_distance_m: float = 2.0,
    detector_pixel_size_m: float = 75e-6,
    margin_px: int = 4,
    bad_pixel_fraction: float = 0.0,
    noise: bool = True,
    counts_dtype: str | numpy.dtype = 'auto',
    name: str = 'simulated',
) -> SimulatedScan:
    """Simulate a far-field ptychography scan with ptychodus's simulator.

    Geometry: ``dx_obj = lambda * z / (N * p_det)`` (10 keV, 2 m, 75 um, N = 64 gives
    51.7 nm). Probe: a Fresnel zone plate (160 um, outer zone 2 * dx_obj, 40 um central
    stop) defocused so its beam is ``probe_diameter_fraction * N`` pixels across. Scan:
    a Fermat spiral (or raster) with step ``step_px`` (default: beam diameter / 3.5).
    Object: ``object_kind`` in :data:`OBJECT_KINDS`, amplitude in [0.5, 1], phase in
    [-1, 1] rad scaled to span ``phase_range_rad`` (default 2: [-1, 1]; strong phase objects
    use 3 or more), on the smallest grid that holds every N x N window plus ``margin_px``.

    ``photons_per_pattern`` is the mean detected count per pattern before noise;
    ``noise=False`` returns the expected counts as float. ``bad_pixel_fraction`` marks
    random detector pixels bad (their counts are set to 0). ``counts_dtype='auto'``
    stores uint16 when the counts fit (else uint32); with ``noise=False`` it is float64.
    One ``seed`` drives independent streams for object, scan jitter, noise and bad pixels.
    """
    n = int(pattern_size)
    if n < 8:
        raise ValueError(f'pattern_size must be at least 8; got {pattern_size}')
    if num_positions < 1:
        raise ValueError(f'num_positions must be positive; got {num_positions}')
    if not photons_per_pattern > 0.0:
        raise ValueError(f'photons_per_pattern must be positive; got {photons_per_pattern}')
    if not 0.0 <= bad_pixel_fraction < 1.0:
        raise ValueError(f'bad_pixel_fraction must be in [0, 1); got {bad_pixel_fraction}')

    object_rng, scan_rng, noise_rng, mask_rng = (
        numpy.random.default_rng(s) for s in numpy.random.SeedSequence(seed).spawn(4)
    )

    wavelength_m = energy_eV_to_wavelength_m(photon_energy_eV)
    detector_pixel = PixelGeometry(width_m=detector_pixel_size_m, height_m=detector_pixel_size_m)
    probe_geometry = ProbeGeometry.from_far_field(
        detector_pixel,
        ImageExtent(width_px=n, height_px=n),
        wavelength_m=wavelength_m,
        distance_m=detector_distance_m,
    )
    dx = probe_geometry.pixel_width_m

    # probe, normalised to unit power for now
    probe = _zone_plate_probe(
        probe_geometry, wavelength_m, probe_diameter_fraction, zone_plate, defocus_m
    )
    if num_probe_modes > 1:
        probe = generate_incoherent_probe_modes(probe, num_probe_modes)
    probe_unit = rescale_probe_intensity(probe, 1.0)

    # scan
    if step_px is None:
        step_px = probe_diameter_fraction * n / 3.5
    positions = _scan_positions(scan_kind, num_positions, step_px, dx, position_jitter_px, scan_rng)
    scan_geometry = calculate_scan_geometry(positions)
    assert scan_geometry is not None

    # object grid: every N x N window plus margin
    width_px = math.ceil(scan_geometry.width_m / dx) + n + 2 * margin_px
    height_px = math.ceil(scan_geometry.height_m / dx) + n + 2 * margin_px
    object_geometry = ObjectGeometry(
        width_px=width_px,
        height_px=height_px,
        pixel_width_m=dx,
        pixel_height_m=probe_geometry.pixel_height_m,
        center_x_m=scan_geometry.center_x_m,
        center_y_m=scan_geometry.center_y_m,
    )
    truth = _truth_object(object_kind, object_geometry, n, object_rng)
    if phase_range_rad != 2.0:
        array = truth.get_array()
        array = numpy.abs(array) * numpy.exp(1j * numpy.angle(array) * (phase_range_rad / 2.0))
        truth = Object(
            array=array.astype(truth.get_array().dtype),
            pixel_geometry=truth.get_pixel_geometry(),
            center=truth.get_center(),
            layer_spacing_m=truth.layer_spacing_m,
        )
    positions_px = numpy.stack(
        [
            object_geometry.map_probe_positions_to_object_x_px(positions),
            object_geometry.map_probe_positions_to_object_y_px(positions),
        ],
        axis=-1,
    )
    if not _patch_window_ok(positions_px, n, height_px, width_px):
        raise RuntimeError('internal error: a probe window falls outside the object grid')

    metadata = ProductMetadata(
        name=name,
        comments=(
            f'ptychodus_ptychopinn simulation: object={object_kind} scan={scan_kind} '
            f'seed={seed} photons_per_pattern={photons_per_pattern:g} noise={noise}'
        ),
        detector_distance_m=detector_distance_m,
        photon_energy_eV=photon_energy_eV,
        probe_photon_count=1.0,  # replaced below
        exposure_time_s=1.0,
        mass_attenuation_m2_per_kg=0.0,
        tomography_angle_deg=0.0,
    )

    # ptychodus's simulator conserves physical power: feed it P * dx_det / dx_obj
    amplitude_factor = math.sqrt(
        detector_pixel.get_area_m2() / probe_geometry.get_pixel_geometry().get_area_m2()
    )
    sim_product = Product(
        metadata=metadata,
        probe_positions=positions,
        probes=ProbeSequence(
            array=probe_unit.get_array() * amplitude_factor,
            opr_weights=None,
            pixel_geometry=probe_unit.get_pixel_geometry(),
        ),
        object_=truth,
        losses=[],
    )
    noiseless = generate_diffraction_data(sim_product)  # expected counts for unit power
    unit_patterns = numpy.asarray(noiseless.get_patterns(), dtype=float)
    unit_totals = unit_patterns.sum(axis=(-2, -1))
    probe_photon_count = float(photons_per_pattern / numpy.mean(unit_totals))
    expected = unit_patterns * probe_photon_count

    patterns: numpy.ndarray
    if noise:
        # the same draw generate_diffraction_data(..., rng) makes, on the rescaled patterns
        patterns = noise_rng.poisson(expected)
        auto_dtype = 'uint16' if patterns.max() <= _UINT16_MAX else 'uint32'
    else:
        patterns = expected
        auto_dtype = 'float64'
    dtype = numpy.dtype(auto_dtype if counts_dtype == 'auto' else counts_dtype)
    if numpy.issubdtype(dtype, numpy.integer) and patterns.max() > numpy.iinfo(dtype).max:
        raise ValueError(f'counts exceed {dtype}; choose a wider counts_dtype')
    patterns = patterns.astype(dtype)

    bad_pixels = numpy.zeros((n, n), dtype=bool)
    if bad_pixel_fraction > 0.0:
        num_bad = max(1, round(bad_pixel_fraction * n * n))
        bad_pixels.flat[mask_rng.choice(n * n, size=num_bad, replace=False)] = True
        patterns[:, bad_pixels] = 0

    patterns.flags.writeable = False  # like AssembledDiffractionData.get_patterns()
    diffraction = AssembledDiffractionData(
        indexes=numpy.asarray(positions.get_indexes(), dtype=numpy.intp).copy(),
        patterns=patterns,
        pixel_geometry=noiseless.get_pixel_geometry(),
        bad_pixels=bad_pixels,
    )

    true_probe = rescale_probe_intensity(probe_unit, probe_photon_count)
    probes = ProbeSequence(
        array=true_probe.get_array(),
        opr_weights=None,
        pixel_geometry=true_probe.get_pixel_geometry(),
    )
    initial_object = generate_uniform_object(object_geometry)
    product = Product(
        metadata=replace(metadata, probe_photon_count=probe_photon_count),
        probe_positions=positions,
        probes=probes,
        object_=initial_object,
        losses=[],
    )

    return SimulatedScan(
        diffraction=diffraction,
        product=product,
        truth=truth,
        counts=patterns,
        bad_pixels=bad_pixels,
        probe_modes=probes.get_probe_no_opr().get_array(),
        positions_px=positions_px,
        truth_array=truth.get_array()[0],
    )


# ------------------------------------------------------------------------------ files


def save_layout(
    directory: str | Path, scan: SimulatedScan, *, settings_text: str | None = None
) -> Path:
    """Write ptychodus's batch layout: ``diffraction.h5``, ``product.h5`` (initial guess),
    ``truth.h5`` (a product file whose object is the truth) and, if given, ``settings.ini``.
    Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_diffraction_data(StandardFileLayout.DIFFRACTION.path(directory), scan.diffraction)
    save_product(StandardFileLayout.PRODUCT.path(directory), scan.product)
    save_product(directory / TRUTH_FILE_NAME, scan.truth_product)

    if settings_text is not None:
        StandardFileLayout.SETTINGS.path(directory).write_text(settings_text)

    return directory


def load_truth(directory: str | Path) -> Product:
    """Load ``truth.h5`` written by :func:`save_layout`: a Product whose ``object_`` is the
    true object and whose probe and positions are the true ones (so it can also define the
    illuminated scoring region). Pass it straight to :func:`score_object`."""
    return load_product(Path(directory) / TRUTH_FILE_NAME)


# ---------------------------------------------------------------------------- scoring


def _flattened_object(obj: Object) -> Object:
    if obj.num_layers == 1:
        return obj
    return Object(
        array=obj.get_layers_flattened()[numpy.newaxis],
        pixel_geometry=obj.get_pixel_geometry(),
        center=obj.get_center(),
    )


def _as_object_on_grid(value: Object | Product | numpy.ndarray, truth: Object) -> Object:
    if isinstance(value, Product):
        value = value.object_

    if isinstance(value, Object):
        obj = _flattened_object(value)
        same_grid = (
            obj.get_array().shape[-2:] == truth.get_array().shape[-2:]
            and obj.get_pixel_geometry() == truth.get_pixel_geometry()
            and obj.get_center() == truth.get_center()
        )
        if not same_grid:
            obj = resample_object(obj, truth.get_geometry(), fill_value=1.0)
        return obj

    array = numpy.asarray(value)
    if array.ndim == 3:
        array = numpy.prod(array, axis=0)
    if array.shape != truth.get_array().shape[-2:]:
        raise ValueError(
            f'reconstructed array shape {array.shape} does not match the truth grid '
            f'{truth.get_array().shape[-2:]}'
        )
    return Object(
        array=array.astype(numpy.complex128)[numpy.newaxis],
        pixel_geometry=truth.get_pixel_geometry(),
        center=truth.get_center(),
    )


def _object_product(obj: Object, template: Product | None) -> Product:
    """Wrap an object in a Product, as the ambiguity functions want one."""
    if template is not None:
        return replace(template, object_=obj)

    return Product(
        metadata=ProductMetadata(
            name='scoring',
            comments='',
            detector_distance_m=1.0,
            photon_energy_eV=10_000.0,
            probe_photon_count=1.0,
            exposure_time_s=1.0,
            mass_attenuation_m2_per_kg=0.0,
            tomography_angle_deg=0.0,
        ),
        probe_positions=ProbePositionSequence(),
        probes=ProbeSequence(
            array=numpy.ones((1, 1, 1, 1), dtype=complex),
            opr_weights=None,
            pixel_geometry=obj.get_pixel_geometry(),
        ),
        object_=obj,
        losses=[],
    )


def scoring_region(
    truth: Object | Product,
    *,
    product: Product | None = None,
    region: str | ScoringRegion | Sequence[int] = 'auto',
    threshold_fraction: float = 0.5,
    erosion_px: int = 0,
) -> tuple[int, int, int, int]:
    """Rectangle ``(row_begin, row_end, column_begin, column_end)`` of the truth grid to score.

    ``region``: ``'illumination'`` (ptychodus's
    :func:`~ptychodus.api.metrics.compute_illumination_scoring_region`: largest rectangle
    where the summed probe intensity exceeds ``threshold_fraction`` of its mean, needs the
    probe and positions from ``product`` or a truth Product), ``'scan_bbox'`` (bounding
    box of the scan positions), ``'full'``, ``'auto'`` (illumination when a probe is
    known, else full), a :class:`ScoringRegion`, or an explicit 4-tuple.
    """
    if isinstance(truth, Product):
        if product is None:
            product = truth
        truth = truth.object_

    height, width = truth.get_array().shape[-2:]

    if isinstance(region, ScoringRegion):
        return region.row_begin, region.row_end, region.column_begin, region.column_end

    if not isinstance(region, str):
        r0, r1, c0, c1 = (int(v) for v in region)
        if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
            raise ValueError(f'region {region} is not inside the {height} x {width} grid')
        return r0, r1, c0, c1

    if region == 'auto':
        region = 'illumination' if product is not None else 'full'

    if region == 'full':
        return 0, height, 0, width

    if product is None:
        raise ValueError(f'region {region!r} needs a product (probe and positions)')

    if region == 'scan_bbox':
        geometry = truth.get_geometry()
        xs = geometry.map_probe_positions_to_object_x_px(product.probe_positions)
        ys = geometry.map_probe_positions_to_object_y_px(product.probe_positions)
        r0, r1 = max(0, math.ceil(ys.min())), min(height, math.floor(ys.max()) + 1)
        c0, c1 = max(0, math.ceil(xs.min())), min(width, math.floor(xs.max()) + 1)
        return r0, r1, c0, c1

    if region == 'illumination':
        illumination = compute_illumination_map(replace(product, object_=truth))
        scoring = compute_illumination_scoring_region(
            illumination,
            (height, width),
            threshold_fraction=threshold_fraction,
            erosion_px=erosion_px,
        )
        return scoring.row_begin, scoring.row_end, scoring.column_begin, scoring.column_end

    raise ValueError(f'Unknown region {region!r}')


def score_object(
    reconstructed: Object | Product | numpy.ndarray,
    truth: Object | Product,
    *,
    product: Product | None = None,
    region: str | ScoringRegion | Sequence[int] = 'auto',
    threshold_fraction: float = 0.5,
    erosion_px: int = 0,
) -> dict[str, float]:
    """Score a reconstructed object against the truth with :mod:`ptychodus.api.metrics`.

    ``reconstructed`` is an Object/Product (resampled onto the truth grid if its grid
    differs) or a complex (H, W) array on the truth grid. ``truth`` is the true Object, or
    a truth Product (e.g. from :func:`load_truth`), whose probe and positions then define
    the illuminated region. The global complex scale, phase offset and linear phase ramp
    are estimated inside the region with
    :func:`~ptychodus.api.metrics.estimate_reconstruction_ambiguities` (reference = truth)
    and removed; no translation is fitted. Then amplitude and phase SSIM and PSNR
    (data range = that of the truth in the region) over the region rectangle.

    Returns floats: ``amp_ssim``, ``phase_ssim``, ``amp_psnr``, ``phase_psnr`` (``inf``
    for a perfect match), ``object_scale`` and ``phase_offset_rad`` (removed ambiguities).
    """
    if isinstance(truth, Product):
        if product is None:
            product = truth
        truth_object = _flattened_object(truth.object_)
    else:
        truth_object = _flattened_object(truth)

    test_object = _as_object_on_grid(reconstructed, truth_object)
    r0, r1, c0, c1 = scoring_region(
        truth_object,
        product=product,
        region=region,
        threshold_fraction=threshold_fraction,
        erosion_px=erosion_px,
    )
    weights = numpy.zeros(truth_object.get_array().shape[-2:], dtype=float)
    weights[r0:r1, c0:c1] = 1.0

    reference_product = _object_product(truth_object, product)
    test_product = _object_product(test_object, product)
    ambiguities = estimate_reconstruction_ambiguities(
        test_product, reference=reference_product, weights=weights
    )
    standardized = ambiguities.standardize_product(test_product).object_.get_array()[0]
    reference = truth_object.get_array()[0]

    reference = reference[r0:r1, c0:c1]
    standardized = standardized[r0:r1, c0:c1]
    amp_ref, amp_test = numpy.abs(reference), numpy.abs(standardized)
    phase_ref, phase_test = numpy.angle(reference), numpy.angle(standardized)

    return {
        'amp_ssim': compute_structural_similarity(amp_ref, amp_test),
        'phase_ssim': compute_structural_similarity(phase_ref, phase_test),
        'amp_psnr': compute_peak_signal_to_noise_ratio(amp_ref, amp_test),
        'phase_psnr': compute_peak_signal_to_noise_ratio(phase_ref, phase_test),
        'object_scale': float(ambiguities.object_scale_factor),
        'phase_offset_rad': float(ambiguities.phase_offset_rad),
    }
