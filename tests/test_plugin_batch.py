"""``ptychodus -b reconstruct`` in a subprocess, discovering PINN through the plugin shim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.io import load_product  # noqa: E402

from ptychodus_ptychopinn.config import PRESETS  # noqa: E402
from ptychodus_ptychopinn.plugin.simulation import (  # noqa: E402
    load_truth,
    save_layout,
    score_object,
    simulate_scan,
)

# ptychodus's own entry point, as installed: the install put our shim into ptychodus/plugins/.
PTYCHODUS = [sys.executable, '-m', 'ptychodus']

EPOCHS = 3
SETTINGS = f"""[Processing]
Algorithm = pinn_selfsupervised

[PINN]
Preset = fast
Device = cpu
Epochs = {EPOCHS}
NumThreads = 1
"""


def test_batch_reconstruct_with_the_fast_preset(tmp_path: Path) -> None:
    scan = simulate_scan(pattern_size=32, num_positions=100, photons_per_pattern=1e5, seed=1)
    layout = save_layout(tmp_path / 'in', scan, settings_text=SETTINGS)
    out = tmp_path / 'out'
    command = [*PTYCHODUS, '-b', 'reconstruct', '-i', str(layout)]
    done = subprocess.run([*command, '-o', str(out)], capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]

    # Our algorithm ran, with our settings: one file per epoch, numbered up to our goal.
    goal = EPOCHS + PRESETS['fast']['refine_epochs'] + 1
    written = sorted(p.name for p in out.glob('product.*.h5'))
    assert written == [f'product.{k:06d}.h5' for k in range(1, goal + 1)], log[-3000:]
    assert 'SelfSupervised: 100 patterns of 32 x 32 on cpu, preset fast' in log

    last = load_product(out / written[-1])
    assert len(last.losses) == goal - 1  # every epoch but the inference step
    assert all(loss.value > 0 for loss in last.losses)
    truth = load_truth(layout)
    before = score_object(load_product(layout / 'product.h5'), truth)
    after = score_object(last, truth)
    assert after['amp_ssim'] > max(0.6, before['amp_ssim'] + 0.3), after
    assert after['phase_ssim'] > max(0.4, before['phase_ssim'] + 0.3), after


PRETRAIN_SETTINGS = """[Processing]
Algorithm = pinn_pretrained

[PINN]
Device = cpu
NumThreads = 1
PretrainMinutes = 2
PretrainPatterns = 96
PretrainCluster = 4
PretrainBatchSize = 2
PretrainEpochGroups = 8
Layers = 2
Width = 8
"""


def test_batch_reconstruct_pretrains_for_the_probe_without_a_model_file(tmp_path: Path) -> None:
    """No model file in the input directory: PretrainMinutes > 0 pretrains one, then infers."""
    scan = simulate_scan(pattern_size=32, num_positions=80, photons_per_pattern=1e5, seed=3)
    layout = save_layout(tmp_path / 'in', scan, settings_text=PRETRAIN_SETTINGS)
    out = tmp_path / 'out'
    command = [*PTYCHODUS, '-b', 'reconstruct', '-i', str(layout), '-o', str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert 'Pretrained on 96 simulated patterns' in log, log[-3000:]
    written = sorted(out.glob('product.*.h5'))
    assert len(written) == 4, log[-3000:]  # three pretraining epochs, then the inference
    # the pretraining products carry its loss history (ptychodus plots it live)
    assert len(load_product(written[-2]).losses) == 3
    last = load_product(written[-1])
    truth = load_truth(layout)
    before = score_object(load_product(layout / 'product.h5'), truth)
    after = score_object(last, truth)
    # 96 patterns of pretraining make a weak network, but its two physics layers alone lift
    # the flat start (0.05/0.00) to 0.74/0.23 here
    assert after['amp_ssim'] > before['amp_ssim'] + 0.4, (before, after)
    assert after['phase_ssim'] > before['phase_ssim'] + 0.1, (before, after)
