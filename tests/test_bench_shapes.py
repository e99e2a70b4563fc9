"""bench/pretrain_shapes.py end to end on the CPU, tiny: the contract commands on a geometry
other than sample_data's, one JSON line with the network's and the flat refinement's scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / 'bench' / 'pretrain_shapes.py'


def test_shapes_bench_scores_network_and_flat_refinement(tmp_path: Path) -> None:
    command = [
        sys.executable, str(BENCH), '--json', '--case', 'n32-spiral-1e6', '--positions', '40',
        '--minutes', '0.2', '--patterns', '64', '--keep', str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
    assert len(lines) == 1 and list(lines[0]['cases']) == ['n32-spiral-1e6']
    case = lines[0]['cases']['n32-spiral-1e6']
    assert case['pretrain_patterns'] >= 64
    for key in ('network_amp_ssim', 'network_phase_ssim', 'flat_amp_ssim', 'flat_phase_ssim'):
        assert -1.0 <= case[key] <= 1.0
    assert case['flat_phase_ssim'] > 0.5  # the standard refinement of a 1e6 scan works
    assert case['misfit'] > 0.5 and case['infer_s'] > 0 and case['flat_s'] > 0
    assert (tmp_path / 'n32-spiral-1e6' / 'net.h5').is_file()
