"""Throughput and memory of the engine, measured in one run.

    python bench/throughput.py --json

Prints one JSON line: ``inference_patterns_per_s`` (network + overlap constraint + input
preparation + streaming stitching, via ``engine.infer``), ``network_patterns_per_s`` (bare
forward of the same network on the same batches in the same run), both from the best of
``--repeats`` interleaved (inference, network) pairs, ``ratio`` (the median over the pairs of
network time / inference time; ``ratio_pairs_min``/``_max``; ``ratio_of_best``: the quotient
of the two rates), ``costs_ms_per_pattern`` (inputs,
network, merge, stitch, timed stage by stage), ``fit_patterns_per_s`` (self-supervised
training), ``peak_rss_mb`` and the stitching memory check: peak RSS growth while stitching a
scan and a scan 8x longer (patches generated on the fly), against the size of the output
object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def _scan(n: int, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic scan of the right shapes (throughput does not depend on the content)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(count)))
    step = n / 6.0
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:count]
    positions = n + grid * step + rng.uniform(-0.5, 0.5, (count, 2))
    shape = int(positions.max() + n + 2)
    yy, xx = np.mgrid[-n // 2 : n // 2, -n // 2 : n // 2]
    probe = np.exp(-(xx**2 + yy**2) / (2 * (n / 8) ** 2)).astype(np.complex64)[None]
    counts = rng.poisson(50.0, (count, n, n)).astype(np.uint16)
    return {
        'counts': counts,
        'probe': probe,
        'positions': positions,
        'object': np.ones((shape, shape), np.complex64),
    }


def _payload(data: dict[str, np.ndarray], preset: str, overrides: dict[str, object]):
    from ptychodus_ptychopinn.factory import build_payload

    return build_payload(
        data['counts'],
        None,
        data['probe'],
        data['positions'],
        data['object'],
        preset=preset,
        overrides=overrides,
    )


def measure(
    n: int, count: int, preset: str, device: str, batch: int, repeats: int
) -> dict[str, object]:
    from ptychodus_ptychopinn.device import resolve_device
    from ptychodus_ptychopinn.engine import ResultEvent, infer, reconstruct
    from ptychodus_ptychopinn.model.pinn import Pinn

    data = _scan(n, count)
    overrides = {'device': device, 'inference_batch_size': batch, 'epochs': 1, 'refine_epochs': 0}
    payload = _payload(data, preset, overrides)
    # One short fit gives a model (and measures training throughput).
    start = time.perf_counter()
    model = None
    for event in reconstruct(payload, refine_epochs=0):
        if isinstance(event, ResultEvent):
            model = event.model
    fit_seconds = time.perf_counter() - start
    assert model is not None

    dev = resolve_device(device)
    pinn = Pinn(model.config.model, torch.as_tensor(payload.probe_modes), 1.0, 1.0, payload.canvas)
    pinn.generator.load_state_dict(model.state)
    pinn.to(dev).eval()
    inputs = torch.rand(batch, model.config.model.channels, n, n, device=dev)

    def run_inference() -> None:
        for _event in infer(payload, model):
            pass

    @torch.no_grad()
    def run_network() -> None:
        for b in range(0, count, batch):
            pinn.generator(inputs[: min(batch, count - b)])
        if dev.type == 'cuda':
            torch.cuda.synchronize(dev)

    run_inference()  # warm-up: allocator, FFT plans
    run_network()
    # Interleaved pairs: each inference run is timed next to a bare-network run, so slow
    # stretches of a shared machine hit both members of a pair and cancel in its ratio;
    # ``ratio`` is the median pair ratio. The rates are each side's best run (noise only
    # adds time); their quotient (``ratio_of_best``) is noisier, since the two bests come from
    # different moments.
    pairs = []
    for _ in range(repeats):
        pairs.append((_timed(run_inference), _timed(run_network)))
    ratios = sorted(net / inf for inf, net in pairs)
    inference = count / min(inf for inf, _ in pairs)
    network = count / min(net for _, net in pairs)
    return {
        'n': n,
        'patterns': count,
        'preset': preset,
        'gridsize': model.config.model.gridsize,
        'width': model.config.model.width,
        'device': str(dev),
        'inference_batch_size': batch,
        'inference_patterns_per_s': round(inference, 1),
        'network_patterns_per_s': round(network, 1),
        'ratio': round(statistics.median(ratios), 3),
        'ratio_pairs_min': round(ratios[0], 3),
        'ratio_pairs_max': round(ratios[-1], 3),
        'ratio_of_best': round(inference / network, 3),
        'repeats': repeats,
        'costs_ms_per_pattern': _costs(payload, model, pinn, dev, batch),
        'fit_patterns_per_s': round(count / fit_seconds, 1),
        'threads': torch.get_num_threads(),
    }


def _timed(function) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@torch.no_grad()
def _costs(payload, model, pinn, dev, batch: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Where inference time goes, per pattern: input preparation, the network, the overlap
    merge (anchor patch only) and stitching, timed stage by stage over the whole scan."""
    from ptychodus_ptychopinn.config import resolve_config
    from ptychodus_ptychopinn.engine.context import RunContext

    ctx = RunContext(payload, resolve_config('standard').pinn, model, dev)
    ctx.pinn.eval()
    stitcher = ctx.stitcher()
    totals = dict.fromkeys(('inputs', 'network', 'merge', 'stitch'), 0.0)
    count = payload.num_patterns
    for start in range(0, count, batch):
        groups = np.arange(start, min(start + batch, count))
        t0 = time.perf_counter()
        inputs = ctx.network_input(ctx.measured(payload.groups.members[groups]))
        offsets = ctx.offsets(groups)
        t1 = time.perf_counter()
        amplitude, phase = ctx.pinn.generator(inputs)
        t2 = time.perf_counter()
        patches = torch.polar(amplitude, phase)
        if model.config.model.channels > 1:
            from ptychodus_ptychopinn.physics.translate import merge_and_extract

            patches = merge_and_extract(
                patches, offsets.to(amplitude.dtype), ctx.pinn.merge_weight(), ctx.pinn.canvas, 1
            )
        t3 = time.perf_counter()
        stitcher.add(patches[:, 0], ctx.positions(groups))
        t4 = time.perf_counter()
        for key, value in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            totals[key] += value
    t5 = time.perf_counter()
    stitcher.result(payload.object_init)
    totals['stitch'] += time.perf_counter() - t5
    ctx.close()
    return {key: round(1000 * value / count, 3) for key, value in totals.items()}


def stitch_memory(n: int, count: int, batch: int) -> dict[str, float]:
    """Peak RSS growth while streaming ``count`` generated patches into the stitcher."""
    from ptychodus_ptychopinn.stitch import Stitcher

    side = 400
    rng = np.random.default_rng(0)
    weight = torch.ones(n, n)
    # Warm up torch's FFT plans and allocator, then reset the high-water mark (Linux).
    Stitcher((side, side), weight, torch.device('cpu')).add(
        torch.ones(batch, n, n, dtype=torch.complex64), torch.full((batch, 2), float(side // 2))
    )
    base = _reset_peak_rss()
    stitcher = Stitcher((side, side), weight, torch.device('cpu'))
    for start in range(0, count, batch):
        size = min(batch, count - start)
        positions = torch.from_numpy(rng.uniform(n, side - n, (size, 2)))
        patches = torch.polar(torch.ones(size, n, n), torch.rand(size, n, n))
        stitcher.add(patches, positions)
    stitcher.result(np.ones((side, side), np.complex64))
    peak = _status_kb('VmHWM')
    return {
        'patterns': count,
        'rss_growth_mb': round((peak - base) / 1024, 1),
        'object_mb': round(side * side * 8 / 2**20, 2),
    }


def _status_kb(key: str) -> int:
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS (``/proc/self/clear_refs``) and return it in kB."""
    with open('/proc/self/clear_refs', 'w') as handle:
        handle.write('5')
    return _status_kb('VmRSS')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line')
    parser.add_argument('--n', type=int, default=64, help='pattern size (default 64)')
    parser.add_argument('--patterns', type=int, default=512, help='scan length (default 512)')
    parser.add_argument('--preset', default='standard', help='network preset (default standard)')
    parser.add_argument('--device', default='auto', help='device (default auto)')
    parser.add_argument('--batch', type=int, default=64, help='inference batch (default 64)')
    parser.add_argument(
        '--repeats', type=int, default=7, help='interleaved timing pairs (default 7)'
    )
    parser.add_argument('--stitch-only', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stitch_only:
        print(json.dumps(stitch_memory(args.n, args.stitch_only, args.batch)))
        return
    result = measure(args.n, args.patterns, args.preset, args.device, args.batch, args.repeats)
    memory = []
    for count in (args.patterns, 8 * args.patterns):
        out = subprocess.run(
            [sys.executable, __file__, '--stitch-only', str(count), '--n', str(args.n)],
            check=True,
            capture_output=True,
            text=True,
            # Fixed mmap threshold: glibc otherwise raises it as large batch buffers are freed
            # and keeps them on the heap, which reads as slow RSS creep, not live memory.
            env={**os.environ, 'MALLOC_MMAP_THRESHOLD_': '131072'},
        )
        memory.append(json.loads(out.stdout))
    result['stitch_rss_growth_mb'] = memory[0]['rss_growth_mb']
    result['stitch_rss_growth_8x_mb'] = memory[1]['rss_growth_mb']
    result['stitch_object_mb'] = memory[0]['object_mb']
    result['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f'{key:28s} {value}')


if __name__ == '__main__':
    main()
