"""Reconstruction quality on the bundled sample data, scored against its truth.

    python bench/quality.py --json

Reconstructs ``sample_data/`` (ptychodus layout, simulated with ptychodus's simulator; see
sample_data/README.md) with the ``standard`` preset and prints one JSON line with
``amp_ssim``, ``phase_ssim``, ``amp_psnr``, ``phase_psnr`` (ptychodus.api.metrics, global
phase, scale and phase ramp removed, illuminated region), ``wall_s`` and ``epochs``.
``--network-only`` skips the refinement stage, to show what the network alone gives.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line')
    parser.add_argument('--input', default=str(ROOT / 'sample_data'), help='layout directory')
    parser.add_argument('--preset', default='standard', help='preset (default standard)')
    parser.add_argument('--device', default='auto', help='device (default auto)')
    parser.add_argument('--epochs', type=int, default=None, help='network epochs (default: preset)')
    parser.add_argument('--refine-epochs', type=int, default=None, help='refinement epochs')
    parser.add_argument('--network-only', action='store_true', help='no refinement stage')
    args = parser.parse_args()

    from ptychodus_ptychopinn.engine import ResultEvent, reconstruct
    from ptychodus_ptychopinn.plugin.layout import load_layout
    from ptychodus_ptychopinn.plugin.simulation import load_truth, score_object

    start = time.perf_counter()
    scan = load_layout(args.input)
    overrides = {
        'device': args.device,
        'epochs': args.epochs,
        'refine_epochs': 0 if args.network_only else args.refine_epochs,
    }
    payload = scan.arrays.payload(preset=args.preset, overrides=overrides)
    result = None
    for event in reconstruct(payload):
        if isinstance(event, ResultEvent):
            result = event
    wall = time.perf_counter() - start
    assert result is not None
    truth = load_truth(args.input)
    score = score_object(result.object, truth, product=scan.parameters.product)
    train = payload.config.pinn.train
    out = {
        'preset': payload.config.preset,
        'amp_ssim': round(score['amp_ssim'], 4),
        'phase_ssim': round(score['phase_ssim'], 4),
        'amp_psnr': round(score['amp_psnr'], 2),
        'phase_psnr': round(score['phase_psnr'], 2),
        'wall_s': round(wall, 1),
        'epochs': train.epochs,
        'refine_epochs': train.refine_epochs,
        'patterns': payload.num_patterns,
        'n': payload.n,
        'device': payload.config.execution.device,
    }
    print(json.dumps(out) if args.json else '\n'.join(f'{k:14s} {v}' for k, v in out.items()))


if __name__ == '__main__':
    main()
