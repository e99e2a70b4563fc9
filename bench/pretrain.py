"""Pretraining under the sample_data probe, then the network alone on objects it never saw.

    python bench/pretrain.py --json                  # 15 minutes of pretraining
    python bench/pretrain.py --json --minutes 3
    python bench/pretrain.py --json --low-dose       # also the 1e4-photon case

1. ``ptychodus-ptychopinn pretrain --probe sample_data --output M --minutes M --device cpu``
   (the CLI, in a subprocess: what a user runs). Pretraining objects: dead leaves, blocks and
   smooth blobs (``synth.objects``).
2. Test scans with that probe and geometry (``simulate_scan``'s defaults, as sample_data:
   64 x 64, zone-plate probe 19 px across, Fermat spiral) whose objects come from ptychodus's
   own generators of other families: fractal noise and a Siemens star, phase range 3 rad,
   amplitude in [0.5, 1], 500 positions, 1e6 photons per pattern, seeds 101 and 102.
   ``network_amp_ssim`` / ``network_phase_ssim``: the mean over those scans of the network's
   stitched object (``engine.infer``: no fitting, no refinement), scored with
   ``ptychodus.api.metrics`` after removing the ambiguities (``plugin.simulation.score_object``).
   ``infer_s``: the median wall time of inference plus stitching of one 500-pattern scan
   (after one warm-up run).
3. On the fractal scan: refinement with the ``standard`` preset from a flat start until it
   stops (its plateau or budget); its final SSIMs are "quality". Then pretrained inference
   followed by the same refinement; ``refine_to_quality_s`` is when that run's object first
   reaches both quality SSIMs (inference included), ``refine_from_flat_to_quality_s`` when
   the flat-start run did (its first epoch at quality). Engine time: scoring is not counted,
   and one refinement epoch runs first, untimed (the process's first autograd pass costs
   about a second, which would otherwise be charged to the flat start alone).
4. ``--low-dose``: the same at 1e4 photons per pattern: a second pretraining for a 1e4-photon
   copy of sample_data (same probe and positions), the network alone, the network fine-tuned
   by ``--fine-tune-epochs`` refinement epochs, and the flat-start refinement, on the fractal
   scan at 1e4.

Prints one JSON line (``--json``) with those keys plus per-scan figures.
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

ROOT = Path(__file__).resolve().parent.parent
TEST_SCANS = (('fractal', 101), ('siemens_star', 102))


def _pretrain(probe_dir: Path, output: Path, minutes: float, extra: list[str]) -> dict[str, Any]:
    command = [
        sys.executable, '-m', 'ptychodus_ptychopinn', 'pretrain', '--probe', str(probe_dir),
        '--output', str(output), '--minutes', str(minutes), '--device', 'cpu',
        '--events', 'json', '-q', *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f'pretrain failed ({done.returncode}): {done.stderr[-2000:]}')
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
    result = next(r for r in records if r['event'] == 'result')
    return {'wall_s': wall, 'seconds': result['seconds'], 'patterns': result['patterns'],
            'validation_loss': result['validation_loss']}  # fmt: skip


def _scan(directory: Path, kind: str, seed: int, photons: float, positions: int = 500) -> Path:
    from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan

    scan = simulate_scan(
        pattern_size=64, num_positions=positions, photons_per_pattern=photons, seed=seed,
        object_kind=kind, phase_range_rad=3.0, name=f'{kind}-{seed}',
    )  # fmt: skip
    return save_layout(directory, scan)


def _payload(directory: Path, model: Any, preset: str = 'standard') -> tuple[Any, Any]:
    from ptychodus_ptychopinn.config import ARCHITECTURE_KEYS
    from ptychodus_ptychopinn.plugin.layout import load_layout

    layout = load_layout(directory)
    overrides: dict[str, Any] = {'device': 'cpu'}
    if model is not None:
        for key in ARCHITECTURE_KEYS:
            overrides[key] = getattr(model.config.model, key)
    return layout, layout.arrays.payload(preset=preset, overrides=overrides)


def _score(directory: Path, layout: Any, obj: Any) -> tuple[float, float]:
    from ptychodus_ptychopinn.plugin.simulation import load_truth, score_object

    score = score_object(obj, load_truth(directory), product=layout.parameters.product)
    return round(score['amp_ssim'], 4), round(score['phase_ssim'], 4)


def _infer(directory: Path, model: Any) -> tuple[tuple[float, float], float]:
    from ptychodus_ptychopinn import engine

    layout, payload = _payload(directory, model)
    start = time.perf_counter()
    result = None
    for event in engine.infer(payload, model):
        if isinstance(event, engine.ResultEvent):
            result = event
    seconds = time.perf_counter() - start
    assert result is not None
    return _score(directory, layout, result.object), seconds


def _refine_trace(
    directory: Path, model: Any, refine_epochs: int | None = None
) -> list[tuple[float, float, float]]:
    """(engine seconds, amp SSIM, phase SSIM) at every snapshot of a standard-preset run."""
    from ptychodus_ptychopinn import engine

    layout, payload = _payload(directory, model)
    trace = []
    scoring = 0.0
    start = time.perf_counter()
    events = engine.reconstruct(payload, model, fit_epochs=0, refine_epochs=refine_epochs)
    for event in events:
        if isinstance(event, engine.SnapshotEvent):
            now = time.perf_counter()
            elapsed = now - start - scoring  # the engine's time so far, scoring left out
            amp, phase = _score(directory, layout, event.object)
            scoring += time.perf_counter() - now
            trace.append((elapsed, amp, phase))
    return trace


def _first_at(trace: list[tuple[float, float, float]], amp: float, phase: float) -> float | None:
    for seconds, a, p in trace:
        if a >= amp and p >= phase:
            return round(seconds, 2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line')
    parser.add_argument(
        '--minutes', type=float, default=15.0, help='pretraining budget (default 15)'
    )
    parser.add_argument('--low-dose', action='store_true', help='also the 1e4-photon case')
    parser.add_argument(
        '--fine-tune-epochs',
        type=int,
        default=20,
        help='low dose: refinement epochs after the network',
    )
    parser.add_argument('--keep', metavar='DIR', help='keep the models and scans in DIR')
    parser.add_argument(
        '--skip-refine', action='store_true', help='network figures only (no step 3)'
    )
    parser.add_argument('--model', metavar='FILE', help='skip pretraining: use this model (1e6)')
    parser.add_argument(
        '--model-low', metavar='FILE', help='--low-dose: skip its pretraining, use this model'
    )
    parser.add_argument(
        '--set', action='append', default=[], metavar='KEY=VALUE', help='passed to pretrain'
    )
    args = parser.parse_args()
    os.environ.setdefault('PYTHONWARNINGS', 'ignore')

    from ptychodus_ptychopinn.checkpoint import load_model

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix='bench-pretrain-'))
    work.mkdir(parents=True, exist_ok=True)
    extra = [item for value in args.set for item in ('--set', value)]
    out: dict[str, Any] = {'minutes': args.minutes}
    model_path = Path(args.model) if args.model else work / 'model.safetensors'
    if not args.model:
        info = _pretrain(ROOT / 'sample_data', model_path, args.minutes, extra)
        out['pretrain_s'] = round(info['seconds'], 1)
        out['pretrain_wall_s'] = round(info['wall_s'], 1)
        out['pretrain_patterns'] = info['patterns']
        out['pretrain_validation_loss'] = info['validation_loss']
    model = load_model(model_path)
    scans = {
        f'{kind}-{seed}': _scan(work / f'{kind}-{seed}', kind, seed, 1e6)
        for kind, seed in TEST_SCANS
    }
    _infer(next(iter(scans.values())), model)  # warm-up: lazy imports, allocator
    per_scan: dict[str, Any] = {}
    times = []
    for name, directory in scans.items():
        (amp, phase), seconds = _infer(directory, model)
        per_scan[name] = {'amp_ssim': amp, 'phase_ssim': phase, 'infer_s': round(seconds, 2)}
        times.append(seconds)
    out['network_amp_ssim'] = round(
        sum(v['amp_ssim'] for v in per_scan.values()) / len(per_scan), 4
    )
    out['network_phase_ssim'] = round(
        sum(v['phase_ssim'] for v in per_scan.values()) / len(per_scan), 4
    )
    out['infer_s'] = round(sorted(times)[len(times) // 2], 2)
    out['scans'] = per_scan

    first = next(iter(scans.values()))
    if args.skip_refine:
        out['load_avg_1min'] = round(os.getloadavg()[0], 2)
        print(json.dumps(out))
        return
    _refine_trace(first, None, refine_epochs=1)  # warm-up: the process's first autograd pass
    flat = _refine_trace(first, None)
    quality = flat[-1][1:]
    warm = _refine_trace(first, model)
    out['quality'] = {'amp_ssim': quality[0], 'phase_ssim': quality[1]}
    out['refine_from_flat_to_quality_s'] = _first_at(flat, *quality)
    out['refine_to_quality_s'] = _first_at(warm, *quality)
    out['refine_from_flat_s'] = round(flat[-1][0], 2)
    out['refine_from_network_final'] = {
        'amp_ssim': warm[-1][1],
        'phase_ssim': warm[-1][2],
        's': round(warm[-1][0], 2),
    }

    if args.low_dose:
        low_probe = _scan(work / 'probe-1e4', 'fractal', 7, 1e4, positions=300)
        low_model = Path(args.model_low) if args.model_low else work / 'model-1e4.safetensors'
        low_seconds = None  # pretrained elsewhere (--model-low)
        if not args.model_low:
            low_seconds = round(_pretrain(low_probe, low_model, args.minutes, extra)['seconds'], 1)
        model_low = load_model(low_model)
        scan = _scan(work / 'fractal-101-1e4', 'fractal', 101, 1e4)
        (amp, phase), _ = _infer(scan, model_low)
        tuned = _refine_trace(scan, model_low, args.fine_tune_epochs)
        flat_low = _refine_trace(scan, None)
        out['low_dose'] = {
            'photons': 1e4, 'pretrain_s': low_seconds,
            'network_amp_ssim': amp, 'network_phase_ssim': phase,
            'fine_tuned_amp_ssim': tuned[-1][1], 'fine_tuned_phase_ssim': tuned[-1][2],
            'fine_tune_epochs': args.fine_tune_epochs, 'fine_tuned_s': round(tuned[-1][0], 2),
            'flat_refine_amp_ssim': flat_low[-1][1], 'flat_refine_phase_ssim': flat_low[-1][2],
            'flat_refine_s': round(flat_low[-1][0], 2),
        }  # fmt: skip
    out['load_avg_1min'] = round(os.getloadavg()[0], 2)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
