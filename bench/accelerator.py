"""Pretraining, inference and refinement throughput on one device, float32 against mixed.

    python bench/accelerator.py --json --device cuda     # N = 64 and 128, both precisions
    # a quick check on a laptop:
    python bench/accelerator.py --json --device cpu --sizes 32 --pretrain-seconds 5 \
        --epoch-groups 4 --infer-patterns 64 --refine-epochs 2 --threads 1

Prints one JSON line per (pattern size, precision) case:

- ``pretrain_patterns_per_s``: simulated patterns per second of ``engine.pretrain`` (procedural
  objects simulated on the device, the unrolled network's forward and backward, AdamW, the
  per-epoch validation), counted from the end of the first epoch (warm-up: allocator, FFT plans,
  cuDNN's algorithm choice) to the end of the run, for each batch size in
  ``--pretrain-batches`` (clusters of ``pretrain_cluster`` = 16 patterns per batch item);
- ``infer_s`` / ``infer_patterns_per_s``: the whole ``engine.infer`` (inputs to the device, the
  network over the scan's tiles, phase synchronisation, streaming stitch, the object back on the
  host) for each scan length in ``--infer-patterns``, best of ``--repeats`` after one warm-up;
- ``refine_patterns_per_s``: the refinement stage (what the presets run), patterns per second
  over ``--refine-epochs`` epochs after one warm-up epoch (float32 only: it has no network);
- ``peak_device_mb``: the device's peak allocated memory over the case (CUDA only).

The scan is synthetic (a Gaussian beam, a jittered raster with step N / 6, Poisson counts of
mean 50 per pixel, as ``bench/throughput.py`` makes it): throughput does not depend on the
content. ``precision = mixed`` runs the network's convolutions in bfloat16 and the physics in
float32 (``model/precision.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from throughput import _payload, _scan


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type != 'cuda':
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def pretrain_rate(
    data: dict[str, np.ndarray],
    execution: dict[str, Any],
    batch: int,
    seconds: float,
    epoch_groups: int,
) -> tuple[float, Any, int]:
    """Patterns per second after the first epoch; the model, for inference; epochs run."""
    from ptychodus_ptychopinn.engine import EpochEvent, ResultEvent, pretrain

    overrides = {
        **execution,
        'generator': 'unrolled',
        'pretrain_minutes': seconds / 60.0,
        'pretrain_batch_size': batch,
        'pretrain_checkpoint_every': 1e6,
        'pretrain_epoch_groups': epoch_groups,
    }
    payload = _payload(data, 'standard', overrides)
    config = payload.config.pinn.pretrain
    per_epoch = config.pretrain_epoch_groups * config.pretrain_cluster
    stamps: list[float] = []
    model = None
    for event in pretrain(payload):
        if isinstance(event, EpochEvent):
            stamps.append(time.perf_counter())
        elif isinstance(event, ResultEvent):
            model = event.model
    if len(stamps) < 2:
        raise SystemExit(
            f'pretraining ran {len(stamps)} epoch(s) in {seconds} s: raise --pretrain-seconds'
        )
    rate = per_epoch * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return rate, model, len(stamps)


def infer_seconds(
    data: dict[str, np.ndarray], model: Any, execution: dict[str, Any], repeats: int
) -> float:
    from ptychodus_ptychopinn.engine import infer

    payload = _payload(data, 'standard', execution)
    times = []
    for _ in range(repeats + 1):  # the first is the warm-up
        start = time.perf_counter()
        for _event in infer(payload, model):
            pass
        times.append(time.perf_counter() - start)
    return min(times[1:])


def refine_rate(data: dict[str, np.ndarray], execution: dict[str, Any], epochs: int) -> float:
    """Refinement patterns per second over ``epochs`` epochs after the first."""
    from ptychodus_ptychopinn.engine import EpochEvent, reconstruct

    overrides = {
        **execution,
        'refine_epochs': epochs + 1,
        'refine_time_limit': 0.0,
        'plateau_patience': 0,
        'snapshot_every': 100_000,
    }
    payload = _payload(data, 'standard', overrides)
    stamps = [
        time.perf_counter()
        for event in reconstruct(payload)
        if isinstance(event, EpochEvent) and event.stage == 'refine'
    ]
    return payload.num_patterns * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def measure(args: argparse.Namespace, n: int, precision: str) -> dict[str, Any]:
    from ptychodus_ptychopinn.device import resolve_device

    dev = resolve_device(args.device)
    _reset_peak(dev)
    result: dict[str, Any] = {'n': n, 'precision': precision, 'device': str(dev)}
    if dev.type == 'cuda':
        result['device_name'] = torch.cuda.get_device_name(dev)
    result['torch'] = torch.__version__
    execution = {'device': args.device, 'precision': precision, 'num_threads': args.threads}
    train_scan = _scan(n, 256, seed=1)
    model = None
    rates = {}
    for batch in args.pretrain_batches:
        rate, trained, epochs = pretrain_rate(
            train_scan, execution, batch, args.pretrain_seconds, args.epoch_groups
        )
        rates[str(batch)] = {'patterns_per_s': round(rate, 1), 'epochs': epochs}
        model = model or trained
    result['pretrain_patterns_per_s'] = rates
    result['pretrain_seconds'] = args.pretrain_seconds
    infer = {}
    for count in args.infer_patterns:
        seconds = infer_seconds(_scan(n, count, seed=2), model, execution, args.repeats)
        infer[str(count)] = {
            'infer_s': round(seconds, 3),
            'infer_patterns_per_s': round(count / seconds, 1),
        }
    result['infer'] = infer
    if precision == 'float32' and args.refine_epochs > 0:
        scan = _scan(n, args.infer_patterns[0], seed=3)
        result['refine_patterns_per_s'] = round(refine_rate(scan, execution, args.refine_epochs), 1)
    result['peak_device_mb'] = _peak_mb(dev)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line per case')
    parser.add_argument('--device', default='auto', help='device (default auto)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 128], help='pattern sizes')
    parser.add_argument(
        '--precisions', nargs='+', default=['float32', 'mixed'], help='precisions to compare'
    )
    parser.add_argument(
        '--pretrain-seconds', type=float, default=25.0, help='pretraining per measurement'
    )
    parser.add_argument(
        '--pretrain-batches', type=int, nargs='+', default=[4, 32], help='pretrain_batch_size'
    )
    parser.add_argument(
        '--infer-patterns', type=int, nargs='+', default=[500, 4096], help='scan lengths'
    )
    parser.add_argument(
        '--epoch-groups', type=int, default=64, help='pretrain_epoch_groups (default 64)'
    )
    parser.add_argument('--refine-epochs', type=int, default=10, help='timed refine epochs')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    parser.add_argument('--repeats', type=int, default=3, help='timed inference runs')
    args = parser.parse_args()
    for n in args.sizes:
        for precision in args.precisions:
            result = measure(args, n, precision)
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(result, flush=True)


if __name__ == '__main__':
    main()
