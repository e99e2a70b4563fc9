"""Tests for the ptychodus-based scan simulator and scorer (plugin/simulation.py)."""

from __future__ import annotations

import numpy
import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.io import load_diffraction_data, load_product  # noqa: E402
from ptychodus.api.object import Object  # noqa: E402

from ptychodus_ptychopinn.plugin.simulation import (  # noqa: E402
    SimulatedScan,
    load_truth,
    save_layout,
    score_object,
    scoring_region,
    simulate_scan,
)

N = 64


@pytest.fixture(scope='module')
def scan() -> SimulatedScan:
    return simulate_scan(pattern_size=N, num_positions=500, photons_per_pattern=1e6, seed=0)


@pytest.fixture(scope='module')
def noiseless() -> SimulatedScan:
    return simulate_scan(pattern_size=N, num_positions=40, seed=1, noise=False)


def _fourier_shift(array: numpy.ndarray, dx: float, dy: float) -> numpy.ndarray:
    fy = numpy.fft.fftfreq(array.shape[-2])[:, None]
    fx = numpy.fft.fftfreq(array.shape[-1])
    return numpy.fft.ifft2(numpy.fft.fft2(array) * numpy.exp(-2j * numpy.pi * (fx * dx + fy * dy)))


def test_shapes_and_dtypes(scan: SimulatedScan) -> None:
    k = 500
    assert scan.counts.shape == (k, N, N)
    assert scan.counts.dtype == numpy.uint16
    assert scan.bad_pixels.shape == (N, N) and scan.bad_pixels.dtype == bool
    assert not scan.bad_pixels.any()
    assert scan.probe_modes.shape == (1, N, N) and numpy.iscomplexobj(scan.probe_modes)
    assert scan.positions_px.shape == (k, 2)
    assert scan.truth_array.ndim == 2 and numpy.iscomplexobj(scan.truth_array)
    assert numpy.array_equal(scan.diffraction.get_patterns(), scan.counts)
    assert scan.diffraction.get_pixel_geometry().width_m == pytest.approx(75e-6)

    # the product's object is a flat initial guess on exactly the truth's grid
    guess = scan.product.object_
    assert guess.get_geometry() == scan.truth.get_geometry()
    assert numpy.all(guess.get_array() == 1)

    # probe: the true one, normalised ptychodus's way
    assert numpy.array_equal(scan.product.probes.get_probe_no_opr().get_array(), scan.probe_modes)
    power = numpy.sum(numpy.abs(scan.probe_modes) ** 2)
    assert power == pytest.approx(scan.product.metadata.probe_photon_count, rel=1e-9)

    # object: amplitude ~[0.5, 1], phase ~[-1, 1] rad, both structured
    amplitude, phase = numpy.abs(scan.truth_array), numpy.angle(scan.truth_array)
    assert 0.45 < amplitude.min() and amplitude.max() <= 1.0 + 1e-9
    assert -1.05 < phase.min() < -0.5 and 0.5 < phase.max() < 1.05
    assert amplitude.std() > 0.05 and phase.std() > 0.2


def test_dc_at_centre(scan: SimulatedScan) -> None:
    mean = scan.counts.astype(float).mean(axis=0)
    yy, xx = numpy.mgrid[:N, :N]
    cx, cy = (mean * xx).sum() / mean.sum(), (mean * yy).sum() / mean.sum()
    assert abs(cx - N / 2) < 1.0 and abs(cy - N / 2) < 1.0
    # the zone plate's illumination cone (radius N/4) holds nearly all the counts
    radius = numpy.hypot(xx - N / 2, yy - N / 2)
    assert mean[radius < 0.3 * N].sum() > 0.9 * mean.sum()
    peak_y, peak_x = numpy.unravel_index(numpy.argmax(mean), mean.shape)
    assert numpy.hypot(peak_x - N / 2, peak_y - N / 2) < 0.3 * N


def test_counts_match_dose(scan: SimulatedScan) -> None:
    totals = scan.counts.reshape(len(scan.counts), -1).sum(axis=1, dtype=float)
    assert totals.mean() == pytest.approx(1e6, rel=0.05)
    assert numpy.median(totals) == pytest.approx(1e6, rel=0.2)
    assert totals.min() > 0.5e6 and totals.max() < 1.5e6


def test_positions_inside_grid_with_full_window(scan: SimulatedScan) -> None:
    height, width = scan.truth_array.shape
    start = numpy.floor(scan.positions_px - (N - 1) / 2)
    assert numpy.all(start >= 0)
    assert numpy.all(start[:, 0] + N <= width) and numpy.all(start[:, 1] + N <= height)

    geometry = scan.truth.get_geometry()
    positions = scan.product.probe_positions
    x_px = geometry.map_probe_positions_to_object_x_px(positions)
    y_px = geometry.map_probe_positions_to_object_y_px(positions)
    assert numpy.allclose(scan.positions_px, numpy.stack([x_px, y_px], axis=-1))
    # neighbouring positions overlap well: nearest-neighbour step ~ beam diameter / 3.5
    xy = scan.positions_px
    distance = numpy.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    numpy.fill_diagonal(distance, numpy.inf)
    assert 3.0 < numpy.median(distance.min(axis=1)) < 0.3 * N / 2.5


def test_forward_model_convention(noiseless: SimulatedScan) -> None:
    """Known answer: patch at r - (N-1)/2, fftshift(fft2(P O, ortho)), scale 1 (DESIGN 2)."""
    assert noiseless.counts.dtype == numpy.float64
    probe = noiseless.probe_modes[0]
    errors, errors_half_pixel = [], []

    for k in range(len(noiseless.counts)):
        sx, sy = noiseless.positions_px[k] - (N - 1) / 2
        x0, y0 = int(numpy.floor(sx)), int(numpy.floor(sy))
        patch = noiseless.truth_array[y0 : y0 + N, x0 : x0 + N]
        measured = noiseless.counts[k]

        for shift, sink in ((0.0, errors), (0.5, errors_half_pixel)):
            exit_wave = _fourier_shift(probe, sx - x0 + shift, sy - y0) * patch
            predicted = numpy.abs(numpy.fft.fftshift(numpy.fft.fft2(exit_wave, norm='ortho'))) ** 2
            sink.append(numpy.linalg.norm(predicted - measured) / numpy.linalg.norm(measured))

    assert max(errors) < 0.01
    assert numpy.mean(errors_half_pixel) > 5 * numpy.mean(errors)


def test_scoring_truth_flat_and_ambiguities(scan: SimulatedScan) -> None:
    perfect = score_object(scan.truth, scan.truth, product=scan.product)
    assert perfect['amp_ssim'] > 0.999 and perfect['phase_ssim'] > 0.999
    assert perfect['amp_psnr'] > 60 and perfect['phase_psnr'] > 60

    flat = score_object(scan.product.object_, scan.truth_product)
    assert flat['amp_ssim'] < 0.5 and flat['phase_ssim'] < 0.5
    assert flat['amp_psnr'] < perfect['amp_psnr'] - 20

    # global scale, phase offset and linear phase ramp are removed before scoring
    geometry = scan.truth.get_geometry()
    coords = geometry.get_transverse_coordinates()
    ramp = 0.02 * coords.x_m / geometry.pixel_width_m - 0.01 * coords.y_m / geometry.pixel_height_m
    disguised = scan.truth_array * 1.7 * numpy.exp(1j * (0.8 + ramp))
    standardized = score_object(disguised, scan.truth_product)
    assert standardized['amp_ssim'] > 0.999 and standardized['phase_ssim'] > 0.999
    assert standardized['object_scale'] == pytest.approx(1.7, rel=1e-6)

    # something in between scores in between
    rng = numpy.random.default_rng(0)
    noisy = scan.truth_array * numpy.exp(1j * 0.3 * rng.standard_normal(scan.truth_array.shape))
    middle = score_object(noisy, scan.truth_product)
    assert flat['phase_ssim'] < middle['phase_ssim'] < 0.99


def test_scoring_region(scan: SimulatedScan) -> None:
    height, width = scan.truth_array.shape
    r0, r1, c0, c1 = scoring_region(scan.truth_product)
    b0, b1, d0, d1 = scoring_region(scan.truth_product, region='scan_bbox')
    assert 0 <= b0 <= r0 < r1 <= b1 <= height and 0 <= d0 <= c0 < c1 <= d1 <= width
    assert (r1 - r0) > 40 and (c1 - c0) > 40
    assert scoring_region(scan.truth) == (0, height, 0, width)
    assert scoring_region(scan.truth, region=(10, 20, 30, 40)) == (10, 20, 30, 40)


def test_save_and_load_layout(scan: SimulatedScan, tmp_path) -> None:
    save_layout(tmp_path, scan, settings_text='[Reconstructor]\n')
    assert (tmp_path / 'settings.ini').read_text() == '[Reconstructor]\n'

    data = load_diffraction_data(tmp_path / 'diffraction.h5')
    assert numpy.array_equal(data.get_patterns(), scan.counts)
    assert numpy.array_equal(data.get_bad_pixels(), scan.bad_pixels)

    product = load_product(tmp_path / 'product.h5')
    assert numpy.all(product.object_.get_array() == 1)
    assert product.object_.get_geometry() == scan.truth.get_geometry()
    assert numpy.allclose(product.probes.get_array(), scan.product.probes.get_array())
    assert product.metadata.probe_photon_count == pytest.approx(scan.probe_photon_count)

    truth = load_truth(tmp_path)
    assert isinstance(truth.object_, Object)
    assert numpy.array_equal(truth.object_.get_array()[0], scan.truth_array)
    assert score_object(truth, truth)['phase_ssim'] > 0.999


def test_options_and_determinism() -> None:
    a = simulate_scan(num_positions=30, seed=3, scan_kind='raster', bad_pixel_fraction=0.01)
    b = simulate_scan(num_positions=30, seed=3, scan_kind='raster', bad_pixel_fraction=0.01)
    assert numpy.array_equal(a.counts, b.counts)
    assert a.bad_pixels.sum() == round(0.01 * N * N)
    assert numpy.all(a.counts[:, a.bad_pixels] == 0)

    # the dose changes the noise, not the object or the scan
    c = simulate_scan(num_positions=30, seed=3, scan_kind='raster', photons_per_pattern=1e4)
    assert numpy.array_equal(c.truth_array, a.truth_array)
    assert numpy.array_equal(c.positions_px, a.positions_px)

    modes = simulate_scan(num_positions=10, num_probe_modes=3, pattern_size=32)
    assert modes.probe_modes.shape == (3, 32, 32)
    power = numpy.sum(numpy.abs(modes.probe_modes) ** 2)
    assert power == pytest.approx(modes.probe_photon_count, rel=1e-9)

    with pytest.raises(ValueError):
        simulate_scan(num_positions=10, object_kind='nope')
