"""Pretraining beyond the sample_data geometry: other pattern sizes, scan shapes, doses, probes.

    python bench/pretrain_shapes.py --json               # every case, 2 minutes of pretraining each
    python bench/pretrain_shapes.py --json --minutes 5 --case n128-raster-1e5

``bench/pretrain.py`` measures one geometry (sample_data's: N = 64, a Fermat spiral, one probe
mode, no bad pixels). This one checks that the same commands hold up elsewhere. For each case
(:data:`CASES`) it simulates, with ptychodus's simulator, a layout to pretrain for (a
dead-leaves object, seed 1: only its probe, mask, dose and scan shape are read) and a test scan
with the same probe and geometry whose object is a Siemens star (seed 2; phase range 3 rad),
then runs what a user runs, in subprocesses:

    ptychodus-ptychopinn pretrain --probe TRAIN --output M --minutes MIN --device cpu
    ptychodus-ptychopinn infer --input TEST --model M --output NET.h5
    ptychodus-ptychopinn reconstruct --input TEST --output FLAT.h5      # standard, flat start

and scores both objects against the truth with ``ptychodus.api.metrics`` after removing the
ambiguities (``plugin.simulation.score_object``). ``misfit``: the network object's data misfit
as a multiple of the Poisson noise (``engine.misfit``; about 1 when only noise is left).
``infer_s`` and ``flat_s`` are wall times of the commands (process start-up included).

Prints one JSON line (``--json``): ``minutes`` and, per case, ``network_amp_ssim``,
``network_phase_ssim``, ``infer_s``, ``misfit``, ``flat_amp_ssim``, ``flat_phase_ssim``,
``flat_s``, ``pretrain_patterns``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES: dict[str, dict[str, Any]] = {
    'n32-spiral-1e6': {'pattern_size': 32, 'photons_per_pattern': 1e6, 'num_positions': 300},
    'n128-raster-1e5': {
        'pattern_size': 128, 'photons_per_pattern': 1e5, 'num_positions': 200,
        'scan_kind': 'raster',
    },
    'n64-raster-bad-pixels-2-modes': {
        'pattern_size': 64, 'photons_per_pattern': 1e6, 'num_positions': 300,
        'scan_kind': 'raster', 'bad_pixel_fraction': 0.01, 'num_probe_modes': 2,
    },
    'n64-wide-probe-1e5-jitter': {
        'pattern_size': 64, 'photons_per_pattern': 1e5, 'num_positions': 300,
        'probe_diameter_fraction': 0.5, 'position_jitter_px': 1.0,
    },
}  # fmt: skip
"""Simulation parameters (``plugin.simulation.simulate_scan``) of each case."""


def _cli(*args: str) -> tuple[str, float]:
    """Run ``ptychodus-ptychopinn ARGS``; its stdout and wall seconds (raises on failure)."""
    command = [sys.executable, '-m', 'ptychodus_ptychopinn', *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f'{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}')
    return done.stdout, seconds


def _score(test: Path, product_file: Path) -> tuple[float, float]:
    """Amplitude and phase SSIM of a product file's object, scored as bench/pretrain.py does."""
    from pretrain import _score as score_layout  # bench/pretrain.py, beside this script

    from ptychodus_ptychopinn.plugin.layout import load_layout, read_product_arrays

    return score_layout(test, load_layout(test), read_product_arrays(product_file)['object'])


def _misfit(test: Path, product_file: Path) -> float:
    from ptychodus_ptychopinn.engine.misfit import noise_misfit
    from ptychodus_ptychopinn.plugin.layout import load_layout, read_product_arrays

    payload = load_layout(test).arrays.payload(overrides={'device': 'cpu'})
    obj = read_product_arrays(product_file)['object']
    misfit = noise_misfit(payload.counts, payload.good, payload.probe_modes, payload.positions, obj)
    return round(misfit, 2)


def run_case(
    name: str, work: Path, minutes: float, positions: int | None, patterns: int | None
) -> dict[str, Any]:
    """Pretrain for case ``name``'s geometry, infer on its test scan, refine it from flat."""
    from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan

    parameters = dict(CASES[name])
    if positions is not None:
        parameters['num_positions'] = positions
    folder = work / name
    train = save_layout(
        folder / 'train',
        simulate_scan(seed=1, object_kind='dead_leaves', phase_range_rad=3.0, name='train',
                      **parameters),
    )  # fmt: skip
    test = save_layout(
        folder / 'test',
        simulate_scan(seed=2, object_kind='siemens_star', phase_range_rad=3.0, name='test',
                      **parameters),
    )  # fmt: skip
    model, network, flat = folder / 'model.safetensors', folder / 'net.h5', folder / 'flat.h5'
    budget = ['--minutes', str(minutes)]
    if patterns is not None:
        budget += ['--patterns', str(patterns)]
    out, _ = _cli(
        'pretrain', '--probe', str(train), '--output', str(model), *budget, '--device', 'cpu',
        '--events', 'json', '-q',
    )  # fmt: skip
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
    result = next(r for r in records if r['event'] == 'result')
    _, infer_s = _cli(
        'infer', '--input', str(test), '--model', str(model), '--output', str(network), '-q'
    )
    _, flat_s = _cli(
        'reconstruct', '--input', str(test), '--output', str(flat), '--device', 'cpu',
        '--no-preview', '-q',
    )  # fmt: skip
    net_amp, net_phase = _score(test, network)
    flat_amp, flat_phase = _score(test, flat)
    return {
        'network_amp_ssim': net_amp, 'network_phase_ssim': net_phase,
        'infer_s': round(infer_s, 2), 'misfit': _misfit(test, network),
        'flat_amp_ssim': flat_amp, 'flat_phase_ssim': flat_phase, 'flat_s': round(flat_s, 2),
        'pretrain_patterns': result['patterns'],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line')
    parser.add_argument(
        '--minutes', type=float, default=2.0, help='pretraining budget per case (default 2)'
    )
    parser.add_argument(
        '--case', action='append', choices=sorted(CASES), help='only this case (repeatable)'
    )
    parser.add_argument('--positions', type=int, help='scan points per scan (default: the case)')
    parser.add_argument('--patterns', type=int, help='also stop pretraining after K patterns')
    parser.add_argument('--keep', metavar='DIR', help='keep the layouts, models and products')
    args = parser.parse_args()
    os.environ.setdefault('PYTHONWARNINGS', 'ignore')
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix='bench-shapes-'))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {'minutes': args.minutes, 'cases': {}}
    for name in args.case or list(CASES):
        out['cases'][name] = run_case(name, work, args.minutes, args.positions, args.patterns)
        if not args.json:
            print(name, json.dumps(out['cases'][name]), flush=True)
    out['load_avg_1min'] = round(os.getloadavg()[0], 2)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
