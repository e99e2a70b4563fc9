"""Convention tests with known answers: FFT, translation axes and signs, losses, modes."""

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn.physics.grid import extract_patches, split_positions
from ptychodus_ptychopinn.physics.losses import amplitude_loss, poisson_nll
from ptychodus_ptychopinn.physics.propagation import far_field, predicted_intensity
from ptychodus_ptychopinn.physics.translate import extract, merge_and_extract, place
from ptychodus_ptychopinn.stitch import Stitcher


def _random_complex(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def test_far_field_matches_numpy_with_dc_at_centre() -> None:
    rng = np.random.default_rng(0)
    wave = _random_complex(rng, 3, 16, 16)
    expected = np.fft.fftshift(np.fft.fft2(wave, norm='ortho'), axes=(-2, -1))
    got = far_field(torch.from_numpy(wave)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    flat = far_field(torch.ones(16, 16, dtype=torch.complex128)).abs()
    assert np.unravel_index(int(flat.argmax()), (16, 16)) == (8, 8)  # DC at N // 2
    assert float(flat.square().sum()) == pytest.approx(256.0)  # orthonormal: Parseval


def test_place_moves_a_bright_pixel_along_columns_for_x_and_rows_for_y() -> None:
    patch = torch.zeros(1, 9, 9, dtype=torch.complex128)
    patch[0, 4, 4] = 1.0
    canvas = place(patch, torch.tensor([[3.0, -2.0]], dtype=torch.float64), 21)
    row, col = np.unravel_index(int(canvas.abs().argmax()), (21, 21))
    assert (row, col) == (10 - 2, 10 + 3)
    assert float(canvas.abs().max()) == pytest.approx(1.0, abs=1e-9)


def test_subpixel_place_moves_the_centroid_and_extract_inverts_it() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:16, :16]
    blob = np.exp(-((xx - 7.5) ** 2 + (yy - 7.5) ** 2) / 6.0)
    patch = torch.from_numpy(blob[None].astype(np.complex128))
    offsets = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    canvas = place(patch, offsets, 32)
    weight = canvas.real[0].numpy()
    cy, cx = np.mgrid[:32, :32]
    centroid_x = float((weight * cx).sum() / weight.sum())
    centroid_y = float((weight * cy).sum() / weight.sum())
    assert centroid_x == pytest.approx(15.5 + 0.5, abs=1e-3)
    assert centroid_y == pytest.approx(15.5 + 0.25, abs=1e-3)
    noisy = torch.from_numpy(_random_complex(rng, 2, 16, 16))
    offsets2 = torch.tensor([[1.3, -0.7], [-2.6, 3.1]], dtype=torch.float64)
    back = extract(place(noisy, offsets2, 32), offsets2, 16)
    np.testing.assert_allclose(back.numpy(), noisy.numpy(), atol=1e-10)


def test_merge_keeps_patches_that_already_agree() -> None:
    n, size = 16, 32
    yy, xx = np.mgrid[:size, :size]
    smooth = np.exp(1j * 0.3 * np.sin(xx / 5.0) + 0.1 * np.cos(yy / 4.0))
    canvas = torch.from_numpy(smooth)[None, None]
    offsets = torch.tensor(
        [[[-2.0, -1.0], [2.0, -1.0], [-2.0, 1.0], [2.0, 1.0]]], dtype=torch.float64
    )
    patches = extract(canvas.expand(1, 4, size, size), offsets, n)
    window = torch.from_numpy(np.outer(np.hanning(n), np.hanning(n)))
    merged = merge_and_extract(patches, offsets, window, size)
    inner = (slice(None), slice(None), slice(4, 12), slice(4, 12))
    np.testing.assert_allclose(merged[inner].numpy(), patches[inner].numpy(), atol=1e-6)


def test_merge_averages_patches_that_disagree() -> None:
    n, size = 16, 24
    patches = torch.ones(1, 2, n, n, dtype=torch.complex128)
    patches[0, 1] *= 3.0
    offsets = torch.zeros(1, 2, 2, dtype=torch.float64)
    merged = merge_and_extract(patches, offsets, torch.ones(n, n, dtype=torch.float64), size)
    np.testing.assert_allclose(merged.numpy(), 2.0, atol=1e-9)


def test_extract_patches_centres_the_window_on_the_position() -> None:
    image = torch.zeros(80, 100, dtype=torch.complex128)
    image[50, 60] = 1.0  # row 50 (y), column 60 (x)
    positions = torch.tensor([[60.0, 50.0], [62.0, 49.0]], dtype=torch.float64)
    patches = extract_patches(image, positions, 9)  # (N - 1) / 2 = 4
    assert np.unravel_index(int(patches[0].abs().argmax()), (9, 9)) == (4, 4)
    assert np.unravel_index(int(patches[1].abs().argmax()), (9, 9)) == (5, 2)
    corner, frac = split_positions(torch.tensor([[10.25, 20.75]]), 64)
    assert corner.tolist() == [[-22, -11]]
    np.testing.assert_allclose(frac.numpy(), [[0.75, 0.25]])


@pytest.mark.parametrize(('jitter', 'tolerance'), [(0.0, 1e-9), (0.5, 1e-2)])
def test_stitching_patches_restores_the_object(jitter: float, tolerance: float) -> None:
    rng = np.random.default_rng(2)
    n, shape = 16, (60, 70)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    obj = np.exp(1j * np.sin(xx / 6.0) * np.cos(yy / 7.0)) * (1.0 + 0.2 * np.sin(yy / 5.0))
    positions = np.stack(np.meshgrid(np.arange(14.5, 57, 4.0), np.arange(14.5, 47, 4.0)), -1)
    positions = positions.reshape(-1, 2) + rng.uniform(-jitter, jitter, (positions.size // 2, 2))
    pos = torch.from_numpy(positions)
    patches = extract_patches(torch.from_numpy(obj), pos, n)
    r = np.hypot(*np.mgrid[-8:8, -8:8] + 0.5)
    weight = torch.from_numpy(np.exp(-(r**2) / 10.0))  # decays like a probe
    stitcher = Stitcher(shape, weight, torch.device('cpu'), torch.complex128)
    for start in range(0, len(positions), 7):  # streamed in batches
        stitcher.add(patches[start : start + 7], pos[start : start + 7])
    initial = np.full(shape, 5.0 + 0j)
    result = stitcher.result(initial)
    core = (slice(18, 42), slice(18, 52))
    np.testing.assert_allclose(result[core], obj[core], atol=tolerance)
    assert result[0, 0] == 5.0  # never lit: keeps the input object's value


def test_poisson_nll_gradcheck_in_float64() -> None:
    rng = np.random.default_rng(3)
    predicted = torch.tensor(rng.uniform(0.5, 5.0, (2, 6, 6)), requires_grad=True)
    measured = torch.tensor(rng.poisson(2.0, (2, 6, 6)).astype(np.float64))
    good = torch.ones(6, 6, dtype=torch.bool)
    good[1, 2] = False
    assert torch.autograd.gradcheck(lambda p: poisson_nll(p, measured, good), (predicted,))
    assert torch.autograd.gradcheck(lambda p: amplitude_loss(p, measured, good), (predicted,))


@pytest.mark.parametrize('loss', [poisson_nll, amplitude_loss])
def test_bad_pixel_counts_change_neither_loss_nor_gradient(loss) -> None:
    rng = np.random.default_rng(4)
    good = torch.ones(8, 8, dtype=torch.bool)
    good[3, 5] = False
    measured = torch.tensor(rng.poisson(3.0, (4, 8, 8)).astype(np.float64))
    values, grads = [], []
    for bad_value in (0.0, 1e6):
        measured[:, 3, 5] = bad_value
        predicted = torch.tensor(rng.uniform(1, 2, (4, 8, 8)) * 0 + 1.5, requires_grad=True)
        value = loss(predicted, measured, good)
        value.backward()
        values.append(float(value.detach()))
        grads.append(predicted.grad.clone())
    assert values[0] == values[1]
    assert torch.equal(grads[0], grads[1])
    assert torch.all(grads[0][:, 3, 5] == 0)


def test_probe_modes_add_incoherently() -> None:
    rng = np.random.default_rng(5)
    modes = torch.from_numpy(_random_complex(rng, 2, 8, 8))
    patch = torch.from_numpy(_random_complex(rng, 1, 8, 8))
    both = predicted_intensity(modes, patch, 2.0)
    each = predicted_intensity(modes[:1], patch, 2.0) + predicted_intensity(modes[1:], patch, 2.0)
    np.testing.assert_allclose(both.numpy(), each.numpy(), rtol=1e-12)
    coherent = predicted_intensity(modes.sum(0, keepdim=True), patch, 2.0)
    assert not np.allclose(both.numpy(), coherent.numpy())
