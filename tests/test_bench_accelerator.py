"""bench/accelerator.py end to end on the CPU, tiny: one JSON line per precision with the
throughput keys (the same script gives the GPU figures in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / 'bench' / 'accelerator.py'


def test_accelerator_bench_prints_one_line_per_precision() -> None:
    command = [
        sys.executable, str(BENCH), '--json', '--device', 'cpu', '--sizes', '32',
        '--pretrain-seconds', '6', '--epoch-groups', '2', '--pretrain-batches', '2',
        '--infer-patterns', '40', '--refine-epochs', '1', '--repeats', '1', '--threads', '1',
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
    assert [(r['n'], r['precision']) for r in lines] == [(32, 'float32'), (32, 'mixed')]
    for record in lines:
        pretrain = record['pretrain_patterns_per_s']['2']
        assert pretrain['patterns_per_s'] > 0 and pretrain['epochs'] >= 2
        infer = record['infer']['40']
        assert 0 < infer['infer_s'] < 60
        rate = infer['infer_patterns_per_s']
        assert abs(rate - 40 / infer['infer_s']) < 0.02 * rate  # infer_s is rounded to 1 ms
        assert record['device'] == 'cpu' and record['peak_device_mb'] is None
    assert lines[0]['refine_patterns_per_s'] > 0
    assert 'refine_patterns_per_s' not in lines[1]  # the refinement has no network
