"""Real measured data: odd/even FRC of the Siemens-star scan in ../shared/data.

    python bench/realdata.py --json [--preset standard] [--keep DIR]

Writes the scan as a ptychodus layout (10 keV, 75 um detector pixels, the detector distance
that makes 10 nm object pixels, DC moved to the centre, the file's probe scaled to the mean
counts, a flat starting object), splits it into odd and even halves with
``ptychodus-ptychopinn split``, reconstructs each half with ``ptychodus-ptychopinn reconstruct
--preset PRESET --device cpu`` and scores the pair with ``ptychodus-ptychopinn frc``. Prints
one JSON line: ``frc_auc``, ``frc_half_bit_nm`` (null only if the curve never falls below the
half-bit threshold), ``frc_one_seventh_nm``, ``wall_s`` (both halves), plus ``preset``,
``seconds_per_half`` and ``load_avg_1min``. The reference (pty-chi LSQML, 200 epochs per half,
ptychodus batch mode): AUC 0.354, half-bit 47.7 nm, 88 s per half.

    .venv-bench/bin/python bench/realdata.py --json --lsqml .venv-bench/bin/python \
        --figure docs/siemens_odd_even_vs_lsqml.png

``--lsqml PYTHON`` also runs pty-chi's LSQML (``--lsqml-epochs``, default 200, ptychodus's
pty-chi defaults, CPU) on the same two halves through ``ptychodus -b reconstruct`` in that
environment (``bash bench/setup_ptychi.sh``) and adds its scores and times under ``lsqml``;
``--figure FILE.png`` draws both methods' halves and FRC curves side by side.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'siemens-star-small.npz.bz2'
N = 128
PIXEL_M = 10e-9
DETECTOR_PIXEL_M = 75e-6
ENERGY_EV = 10_000.0
FRC_KEYS = ('frc_auc', 'frc_half_bit_nm', 'frc_one_seventh_nm')


def write_star_layout(directory: Path, data_path: Path = DATA) -> Path:
    """The Siemens-star scan as a ptychodus layout directory (diffraction.h5 + product.h5)."""
    from ptychodus.api.assemble import AssembledDiffractionData
    from ptychodus.api.constants import energy_eV_to_wavelength_m
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.io import save_diffraction_data, save_product
    from ptychodus.api.object import Object, ObjectGeometry
    from ptychodus.api.probe import ProbeSequence
    from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
    from ptychodus.api.product import Product, ProductMetadata

    data = np.load(io.BytesIO(bz2.open(data_path).read()))
    counts = np.fft.fftshift(data['data'][0], axes=(-2, -1)).astype(np.uint16)  # DC to centre
    corner = data['scan'][0].astype(np.float64)  # (row y, column x) of the window's corner
    centre_y = corner[:, 0] + (N - 1) / 2
    centre_x = corner[:, 1] + (N - 1) / 2
    positions = ProbePositionSequence(
        [
            ProbePosition(index=i, x_m=float(x * PIXEL_M), y_m=float(y * PIXEL_M))
            for i, (x, y) in enumerate(zip(centre_x, centre_y))
        ]
    )
    margin = 4
    width = int(math.ceil(np.ptp(centre_x))) + N + 2 * margin
    height = int(math.ceil(np.ptp(centre_y))) + N + 2 * margin
    geometry = ObjectGeometry(
        width_px=width,
        height_px=height,
        pixel_width_m=PIXEL_M,
        pixel_height_m=PIXEL_M,
        center_x_m=(centre_x.min() + centre_x.max()) / 2 * PIXEL_M,
        center_y_m=(centre_y.min() + centre_y.max()) / 2 * PIXEL_M,
    )
    obj = Object(
        array=np.ones((1, height, width), np.complex64),
        layer_spacing_m=[],
        pixel_geometry=geometry.get_pixel_geometry(),
        center=geometry.get_center(),
    )
    photons = float(counts.sum(axis=(1, 2)).mean())
    probe = data['probe'].reshape(1, 1, N, N).astype(np.complex64)
    probe *= np.sqrt(photons / np.sum(np.abs(probe) ** 2))
    wavelength = energy_eV_to_wavelength_m(ENERGY_EV)
    metadata = ProductMetadata(
        name='siemens-star',
        comments='tike siemens-star-small; 10 keV, 75 um pixels and 10 nm object pixels assumed',
        detector_distance_m=PIXEL_M * N * DETECTOR_PIXEL_M / wavelength,
        photon_energy_eV=ENERGY_EV,
        probe_photon_count=photons,
        exposure_time_s=1.0,
        mass_attenuation_m2_per_kg=0.0,
        tomography_angle_deg=0.0,
    )
    product = Product(
        metadata=metadata,
        probe_positions=positions,
        probes=ProbeSequence(
            array=probe, opr_weights=None, pixel_geometry=PixelGeometry(PIXEL_M, PIXEL_M)
        ),
        object_=obj,
        losses=[],
    )
    diffraction = AssembledDiffractionData(
        indexes=np.arange(len(counts), dtype=np.intp),
        patterns=counts,
        pixel_geometry=PixelGeometry(DETECTOR_PIXEL_M, DETECTOR_PIXEL_M),
        bad_pixels=np.zeros((N, N), bool),
    )
    directory.mkdir(parents=True, exist_ok=True)
    save_diffraction_data(directory / 'diffraction.h5', diffraction)
    save_product(directory / 'product.h5', product)
    return directory


def _cli(*args: str) -> str:
    """``ptychodus-ptychopinn ARGS`` in-process; returns stdout, raises on a non-zero exit."""
    from ptychodus_ptychopinn import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    if code != 0:
        raise RuntimeError(
            f'ptychodus-ptychopinn {" ".join(args)} exited {code}:\n{err.getvalue()}'
        )
    return out.getvalue()


def measure(
    work: Path,
    preset: str,
    extra: list[str],
    lsqml: str | None = None,
    lsqml_epochs: int = 200,
    figure: Path | None = None,
) -> dict[str, object]:
    full = write_star_layout(work / 'full')
    _cli('split', str(full), str(work / 'odd'), str(work / 'even'))
    seconds = {}
    for half in ('odd', 'even'):
        start = time.perf_counter()
        _cli(
            'reconstruct', '--input', str(work / half), '--output', str(work / f'{half}.h5'),
            '--preset', preset, '--device', 'cpu', '--no-preview', '-q', *extra,
        )  # fmt: skip
        seconds[half] = time.perf_counter() - start
    score = json.loads(
        _cli('frc', str(work / 'odd.h5'), str(work / 'even.h5'), '--json', '--png',
             str(work / 'frc.png'))
    )  # fmt: skip
    result: dict[str, object] = {
        **score,
        'wall_s': round(sum(seconds.values()), 1),
        'seconds_per_half': {k: round(v, 1) for k, v in seconds.items()},
        'preset': preset,
        'load_avg_1min': round(os.getloadavg()[0], 2),
    }
    if lsqml is None and figure is None:
        return result
    from ptychodus_ptychopinn.plugin.frc import frc_products

    curves = {preset: frc_products(work / 'odd.h5', work / 'even.h5')}
    if lsqml is not None:
        from side_by_side import run_lsqml_half

        products, lsqml_seconds = {}, {}
        for half in ('odd', 'even'):
            products[half], lsqml_seconds[half] = run_lsqml_half(
                work / half, work, lsqml, lsqml_epochs
            )
        curves['LSQML'] = frc_products(products['odd'], products['even'])
        result['lsqml'] = {
            **{key: curves['LSQML'][key] for key in FRC_KEYS},
            'epochs': lsqml_epochs,
            'wall_s': round(sum(lsqml_seconds.values()), 1),
            'seconds_per_half': {k: round(v, 1) for k, v in lsqml_seconds.items()},
        }
    if figure is not None:
        from side_by_side import plot_side_by_side

        plot_side_by_side(curves, figure)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line')
    parser.add_argument('--preset', default='standard', help='preset (default standard)')
    parser.add_argument('--keep', metavar='DIR', help='work in DIR and keep the files there')
    parser.add_argument(
        '--set', action='append', default=[], metavar='KEY=VALUE', help='extra config keys'
    )
    parser.add_argument(
        '--lsqml', metavar='PYTHON', help='also run LSQML with this interpreter (pty-chi)'
    )
    parser.add_argument('--lsqml-epochs', type=int, default=200, help='LSQML epochs per half')
    parser.add_argument('--figure', metavar='FILE.png', help='plot the halves and FRC curves')
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f'the Siemens-star data is not at {DATA} (../shared/data beside the checkout)')
    extra = [item for pair in args.set for item in ('--set', pair)]
    figure = Path(args.figure).resolve() if args.figure else None
    options = {'lsqml': args.lsqml, 'lsqml_epochs': args.lsqml_epochs, 'figure': figure}
    if args.keep:
        result = measure(Path(args.keep), args.preset, extra, **options)
    else:
        with tempfile.TemporaryDirectory() as work:
            result = measure(Path(work), args.preset, extra, **options)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f'{key:20s} {value}')


if __name__ == '__main__':
    main()
