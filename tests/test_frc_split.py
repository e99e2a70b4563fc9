"""Known answers for the odd/even resolution tools: the FRC (plugin/frc.py) and the scan
split (plugin/split.py).

The FRC must report ~1 for the same object however the copy is shifted (sub-pixel), phased,
scaled or ramped (those are ambiguities of ptychography, not disagreement), ~0 for independent
noise, and must not be fooled by agreeing un-illuminated borders. The split must give two
disjoint halves whose union is the scan, with the source's geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter

from ptychodus_ptychopinn.errors import InputError
from ptychodus_ptychopinn.plugin.frc import frc_arrays, frc_products, plot_frc
from ptychodus_ptychopinn.plugin.split import split_layout

SIZE = 128
PIXEL_NM = 10.0


def _object(seed: int, size: int = SIZE) -> np.ndarray:
    """A textured complex object: amplitude in ~[0.6, 1], phase ~+-1 rad, detail at all scales."""
    rng = np.random.default_rng(seed)
    phase = gaussian_filter(rng.standard_normal((size, size)), 1.0)
    amplitude = gaussian_filter(rng.standard_normal((size, size)), 0.7)
    phase = phase / np.abs(phase).max()
    amplitude = 0.8 + 0.2 * amplitude / np.abs(amplitude).max()
    return amplitude * np.exp(1j * phase)


def _lit_centre(size: int = SIZE, half_width: int = 40) -> np.ndarray:
    """An illumination map lit only in the central square."""
    lit = np.zeros((size, size))
    centre = size // 2
    lit[centre - half_width : centre + half_width, centre - half_width : centre + half_width] = 1.0
    return lit


def test_identical_objects_correlate_fully() -> None:
    obj = _object(0)
    result = frc_arrays(obj, obj.copy(), PIXEL_NM)
    assert result['frc_auc'] > 0.99
    assert result['frc_half_bit_nm'] is None
    assert result['frc_one_seventh_nm'] is None
    assert set(result) == {
        'frc_auc',
        'frc_half_bit_nm',
        'frc_one_seventh_nm',
        'frequency_per_nm',
        'correlation',
        'half_bit_threshold',
        'aligned_a',
        'aligned_b',
    }
    # Rings run from DC to Nyquist = 1 / (2 * 10 nm) = 0.05 / nm.
    assert result['frequency_per_nm'][-1] == pytest.approx(0.05, rel=0.03)


def test_independent_noise_correlates_little() -> None:
    result = frc_arrays(_object(1), _object(2), PIXEL_NM)
    assert abs(result['frc_auc']) < 0.1
    assert result['frc_half_bit_nm'] is not None
    assert result['frc_half_bit_nm'] > 100.0  # fails within the first few rings


def test_subpixel_shifted_copy_correlates_after_registration() -> None:
    obj = _object(3)
    shifted = np.fft.ifft2(fourier_shift(np.fft.fft2(obj), (2.3, -1.6)))
    result = frc_arrays(obj, shifted, PIXEL_NM, illumination=_lit_centre())
    assert result['frc_auc'] > 0.97
    assert result['frc_half_bit_nm'] is None


def test_phase_offset_scale_and_ramp_are_removed() -> None:
    obj = _object(4)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    ramp = np.exp(1j * (0.03 * cols - 0.02 * rows))
    copy = 0.6 * np.exp(1j * 2.0) * ramp * obj
    result = frc_arrays(obj, copy, PIXEL_NM, illumination=_lit_centre())
    assert result['frc_auc'] > 0.98
    offset_only = frc_arrays(obj, np.exp(-1j * 1.2) * obj, PIXEL_NM, remove_ramp=False)
    assert offset_only['frc_auc'] > 0.99


def test_only_the_region_lit_in_both_is_scored() -> None:
    """Independent insides with identical borders (the untouched start object) score low."""
    inside_a, inside_b, border = _object(5), _object(6), _object(7)
    lit = _lit_centre(half_width=36)
    a = np.where(lit > 0, inside_a, border)
    b = np.where(lit > 0, inside_b, border)
    assert frc_arrays(a, b, PIXEL_NM)['frc_auc'] > 0.3  # the whole array: the border agrees
    assert abs(frc_arrays(a, b, PIXEL_NM, illumination=(lit, lit))['frc_auc']) < 0.1


def test_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        frc_arrays(_object(0), _object(0, size=64), PIXEL_NM)
    with pytest.raises(ValueError):
        frc_arrays(_object(0), _object(0), 0.0)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    obj = _object(8)
    result = frc_arrays(obj, 0.9 * obj + 0.1 * _object(9), PIXEL_NM)
    path = plot_frc(result, tmp_path / 'frc.png')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan

    directory = tmp_path_factory.mktemp('scan')
    scan = simulate_scan(pattern_size=16, num_positions=21, photons_per_pattern=1e4, seed=1)
    save_layout(directory, scan, settings_text='[Reconstructor]\n')
    return directory


def test_split_gives_disjoint_halves_whose_union_is_the_scan(layout: Path, tmp_path: Path) -> None:
    from ptychodus.api.io import load_diffraction_data, load_product

    odd, even = split_layout(layout, tmp_path / 'odd', tmp_path / 'even')
    source = load_product(layout / 'product.h5')
    halves = {
        name: load_product(path / 'product.h5') for name, path in (('odd', odd), ('even', even))
    }
    indexes = {name: [p.index for p in product.probe_positions] for name, product in halves.items()}
    all_indexes = [p.index for p in source.probe_positions]
    assert indexes['even'] == all_indexes[0::2]
    assert indexes['odd'] == all_indexes[1::2]
    assert not set(indexes['odd']) & set(indexes['even'])
    assert sorted(indexes['odd'] + indexes['even']) == sorted(all_indexes)
    source_patterns = load_diffraction_data(layout / 'diffraction.h5')
    row_of = {int(i): r for r, i in enumerate(source_patterns.get_indexes())}
    for name, path in (('odd', odd), ('even', even)):
        data = load_diffraction_data(path / 'diffraction.h5')
        assert [int(i) for i in data.get_indexes()] == indexes[name]
        expected = source_patterns.get_patterns()[[row_of[i] for i in indexes[name]]]
        np.testing.assert_array_equal(data.get_patterns(), expected)
        np.testing.assert_array_equal(data.get_bad_pixels(), source_patterns.get_bad_pixels())
        product = halves[name]
        np.testing.assert_array_equal(product.object_.get_array(), source.object_.get_array())
        np.testing.assert_array_equal(product.probes.get_array(), source.probes.get_array())
        assert product.metadata == source.metadata
        assert (path / 'settings.ini').read_text() == '[Reconstructor]\n'


def test_split_refuses_to_overwrite(layout: Path, tmp_path: Path) -> None:
    occupied = tmp_path / 'odd'
    occupied.mkdir()
    (occupied / 'keep.txt').write_text('mine')
    with pytest.raises(InputError, match='refusing to overwrite'):
        split_layout(layout, occupied, tmp_path / 'even')
    assert (occupied / 'keep.txt').read_text() == 'mine'
    assert not (tmp_path / 'even').exists()
    with pytest.raises(InputError):
        split_layout(layout, tmp_path / 'same', tmp_path / 'same')


def test_frc_of_a_product_with_itself(layout: Path) -> None:
    """Product files: pixel size from the object geometry, region from probe and positions."""
    truth = layout / 'truth.h5'
    result = frc_products(truth, truth)
    assert result['frc_auc'] > 0.99
    from ptychodus.api.io import load_product

    pixel_nm = load_product(truth).object_.get_pixel_geometry().width_m * 1e9
    assert result['frequency_per_nm'][-1] == pytest.approx(0.5 / pixel_nm, rel=0.1)
