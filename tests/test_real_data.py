"""Conventions on real measured data: the Siemens-star scan from tike's test data.

No ground truth exists, so the test compares conventions by how well a short direct
refinement explains the measured counts: the documented conventions (DC moved from the
corners to the centre, scan column = x, probe centre = window corner + (N - 1) / 2) must fit
clearly better than the same data with x and y swapped or left unshifted. Skips, saying why,
when ../shared/data is not beside the checkout.
"""

import bz2
import io
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ptychodus_ptychopinn.engine import ResultEvent, reconstruct
from ptychodus_ptychopinn.factory import build_payload

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'siemens-star-small.npz.bz2'
N = 128


@pytest.fixture(scope='module')
def star() -> dict[str, np.ndarray]:
    if not DATA.exists():
        pytest.skip(f'real Siemens-star data not found at {DATA} (shared data is not checked out)')
    data = np.load(io.BytesIO(bz2.open(DATA).read()))
    corner = data['scan'][0].astype(np.float64)  # (row y, column x) of the window's corner
    # The 150 scan points nearest the centre keep the test short (a 180 px square of scan).
    chosen = np.argsort(np.abs(corner - corner.mean(axis=0)).max(axis=1))[:150]
    corner = corner[chosen] - corner[chosen].min(axis=0) + 2
    return {
        'counts': data['data'][0][chosen],  # DC at the corners, as stored
        'corner': corner,
        'probe': data['probe'].reshape(-1, N, N)[:1],
    }


def _excess_loss(star: dict[str, np.ndarray], *, shift_dc: bool, swap_xy: bool) -> float:
    counts = np.fft.fftshift(star['counts'], axes=(-2, -1)) if shift_dc else star['counts']
    corner = star['corner'][:, ::-1] if swap_xy else star['corner']
    positions = np.stack([corner[:, 1], corner[:, 0]], axis=-1) + (N - 1) / 2
    height = int(np.ceil(corner[:, 0].max())) + N + 4
    width = int(np.ceil(corner[:, 1].max())) + N + 4
    payload = build_payload(
        counts,
        None,
        star['probe'],
        positions,
        np.ones((height, width), np.complex64),
        preset='fast',
        # the file's probe held fixed: a refined probe could absorb part of a convention
        # error and hide it
        overrides={
            'refine_epochs': 12,
            'snapshot_every': 100,
            'refine_loss': 'poisson',
            'refine_learning_rate': 0.3,
            'probe_refinement': False,
            'refine_time_limit': 0.0,
        },
    )
    result = next(e for e in reconstruct(payload, fit_epochs=0) if isinstance(e, ResultEvent))
    measured = np.asarray(counts, np.float64)
    floor = float(np.mean(measured - measured * np.log(measured + 1e-6)))
    return result.losses[-1][1] - floor


def test_documented_conventions_explain_real_counts_best(star) -> None:
    right = _excess_loss(star, shift_dc=True, swap_xy=False)
    swapped = _excess_loss(star, shift_dc=True, swap_xy=True)
    unshifted = _excess_loss(star, shift_dc=False, swap_xy=False)
    # Measured: excess 7.5 (documented), 8.8 (x and y swapped), 220 (DC left at the corners).
    # Swapping x and y costs little because the zone-plate probe is nearly symmetric: the
    # transposed geometry can almost be explained by a transposed object.
    assert right > 0
    assert swapped > 1.05 * right
    assert unshifted > 3 * right


def _realdata():
    """``bench/realdata.py`` as a module (its layout writer, CLI runner and measure)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
    try:
        import realdata
    finally:
        sys.path.pop(0)
    return realdata


@pytest.fixture(scope='module')
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Both halves reconstructed with the default preset through the CLI, and their FRC."""
    if not DATA.exists():
        pytest.skip(f'real Siemens-star data not found at {DATA} (shared data is not checked out)')
    work = tmp_path_factory.mktemp('halves')
    return work, _realdata().measure(work, 'standard', ['--num-threads', '2'])


def test_standard_preset_beats_lsqml_on_odd_even_halves(halves) -> None:
    """The whole user path on real data: split, reconstruct each half with the default
    preset through the CLI, FRC between the halves (bench/realdata.py does the same)."""
    _, result = halves
    # pty-chi LSQML, 200 epochs per half through ptychodus: AUC 0.354, half-bit 47.7 nm.
    # Measured here: AUC 0.374, half-bit 43.3 nm, 10 s per half (2-core CPU).
    assert result['frc_auc'] > 0.354, result
    assert result['frc_half_bit_nm'] is not None and result['frc_half_bit_nm'] < 47.7, result


def test_the_network_needs_the_refined_probe_on_real_data(halves) -> None:
    """The unrolled network runs the forward model with the scan's probe as given. Under the
    probe stored with this scan it reconstructs noise (so does any fixed-probe method); under
    each half's probe from its own refinement it nearly matches that refinement. Measured
    (docs/pretraining.md, a network of 1 + 16 physics layers pretrained for 16 patterns):
    FRC AUC 0.118 with the file's probe, 0.369 with the refined ones (refinement: 0.387)."""
    from ptychodus.api.io import load_product, save_product

    work, _ = halves
    cli = _realdata()._cli
    for half in ('odd', 'even'):
        layout = work / f'{half}-refined'
        layout.mkdir()
        shutil.copy(work / half / 'diffraction.h5', layout / 'diffraction.h5')
        given = load_product(work / half / 'product.h5')
        refined = load_product(work / f'{half}.h5')  # what the reconstruction wrote
        save_product(layout / 'product.h5', replace(given, probes=refined.probes))
    model = work / 'physics.safetensors'
    cli('pretrain', '--probe', str(work / 'odd-refined'), '--output', str(model),
        '--patterns', '16', '--device', 'cpu', '-q', '--set', 'layers=1')  # fmt: skip
    auc = {}
    for suffix in ('', '-refined'):
        for half in ('odd', 'even'):
            cli('infer', '--input', str(work / f'{half}{suffix}'), '--model', str(model),
                '--output', str(work / f'net-{half}{suffix}.h5'), '-q')  # fmt: skip
        frc = cli('frc', str(work / f'net-odd{suffix}.h5'), str(work / f'net-even{suffix}.h5'),
                  '--json')  # fmt: skip
        auc[suffix or 'file'] = json.loads(frc)['frc_auc']
    assert auc['file'] < 0.2, auc
    assert auc['-refined'] > 0.33, auc
