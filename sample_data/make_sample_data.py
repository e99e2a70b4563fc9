"""Regenerate the bundled sample scan: ``python sample_data/make_sample_data.py``.

Everything comes from ptychodus's own simulator through ``plugin/simulation.py`` (zone-plate
probe, fractal object, Fermat-spiral scan, Poisson noise), with a fixed seed, so the files
are reproducible and small enough to commit. See sample_data/README.md for what is in them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan

HERE = Path(__file__).resolve().parent
PARAMETERS = {
    'pattern_size': 64,
    'num_positions': 300,
    'photons_per_pattern': 1e6,
    'seed': 7,
    'object_kind': 'fractal',
    'scan_kind': 'spiral',
    'name': 'sample_data',
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--output', type=Path, default=HERE, help='directory to write (default: sample_data/)'
    )
    args = parser.parse_args()
    scan = simulate_scan(**PARAMETERS)  # type: ignore[arg-type]
    directory = save_layout(args.output, scan)
    counts = scan.counts
    height, width = scan.truth_array.shape
    print(
        f'wrote {directory}: {counts.shape[0]} patterns {counts.shape[1]} x {counts.shape[2]} '
        f'({counts.dtype}), mean {counts.sum(axis=(1, 2)).mean():.3g} counts/pattern, '
        f'max pixel {counts.max()}, object {width} x {height} px of '
        f'{scan.object_pixel_size_m * 1e9:.1f} nm, probe_photon_count '
        f'{scan.probe_photon_count:.4g}'
    )
    for name in ('diffraction.h5', 'product.h5', 'truth.h5'):
        print(f'  {name}: {(directory / name).stat().st_size / 1e6:.2f} MB')


if __name__ == '__main__':
    main()
