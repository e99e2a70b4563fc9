"""Pretraining: what it reads from a scan, what it never reads, its budgets, its model file,
the CLI contract (pretrain then infer) and torchrun with two CPU processes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn import engine
from ptychodus_ptychopinn.checkpoint import load_model, save_model
from ptychodus_ptychopinn.cli import main
from ptychodus_ptychopinn.engine.pretrain import probe_fingerprint
from ptychodus_ptychopinn.factory import build_payload
from ptychodus_ptychopinn.plugin.convert import fresnel_number
from ptychodus_ptychopinn.plugin.layout import read_product_arrays
from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan

# A small, fast recipe: N = 32, a narrow network, short epochs.
SMALL = {
    'generator': 'unrolled',
    'width': 4,
    'layers': 3,
    'pretrain_batch_size': 4,
    'pretrain_cluster': 4,
    'pretrain_epoch_groups': 16,
    'pretrain_minutes': 0.0,
    'pretrain_patterns': 16 * 4 * 4,  # 4 epochs of 16 groups of 4
    'device': 'cpu',
    'num_threads': 1,
}
SMALL_SET = [item for k, v in SMALL.items() if k != 'device' for item in ('--set', f'{k}={v}')]


@pytest.fixture(scope='module')
def scan():
    return simulate_scan(pattern_size=32, num_positions=60, photons_per_pattern=1e5, seed=2)


@pytest.fixture(scope='module')
def layout(tmp_path_factory, scan) -> Path:
    return save_layout(tmp_path_factory.mktemp('probe'), scan)


def _payload(scan, counts=None, **extra):
    return build_payload(
        scan.counts if counts is None else counts,
        scan.bad_pixels,
        scan.probe_modes,
        scan.positions_px,
        np.ones_like(scan.truth_array),
        overrides={**SMALL, **extra},
        fresnel_number=fresnel_number(scan.product),
    )


def _run(payload):
    events = list(engine.pretrain(payload))
    result = next(e for e in events if isinstance(e, engine.ResultEvent))
    return events, result


def test_pretraining_learns_and_records_its_recipe(scan) -> None:
    events, result = _run(_payload(scan))
    epochs = [e for e in events if isinstance(e, engine.EpochEvent)]
    assert len(epochs) == 4
    validation = [e.validation_loss for e in epochs]
    assert validation[-1] < validation[0]  # a falling held-out loss
    end = next(e for e in events if isinstance(e, engine.StageEndEvent))
    assert end.stage == 'pretrain' and end.reason == 'epochs'
    assert epochs[-1].progress == engine.PRETRAIN_PROGRESS_UNITS
    meta = result.model.metadata
    assert meta['kind'] == 'pretrained'
    assert meta['pretrain_families'] == 'dead_leaves,blocks,blobs'
    assert meta['n'] == '32' and meta['gridsize'] == '2'
    # The probe the physics sees: the scan's times the detector's Fresnel chirp.
    payload = _payload(scan)
    assert meta['probe_fingerprint'] == probe_fingerprint(payload.physics_probe)
    assert meta['probe_fingerprint'] != probe_fingerprint(scan.probe_modes)
    assert [float(f) for f in meta['fresnel_number'].split(',')] == pytest.approx(
        payload.fresnel_number, rel=1e-5
    )
    assert int(meta['pretrain_patterns']) == 16 * 4 * 4
    assert float(meta['dose_counts_per_pattern']) == pytest.approx(
        float(np.asarray(scan.counts, dtype=float).sum(axis=(1, 2)).mean()), rel=1e-6
    )
    checkpoints = [e for e in events if isinstance(e, engine.CheckpointEvent)]
    assert checkpoints and checkpoints[-1].final


def test_the_measured_patterns_are_never_used(scan) -> None:
    """Same probe, mask, positions and dose, patterns shuffled among scan points: the same
    model, bit for bit (only the mean counts enter)."""
    _, first = _run(_payload(scan))
    shuffled = np.asarray(scan.counts)[np.random.default_rng(0).permutation(len(scan.counts))]
    _, second = _run(_payload(scan, counts=shuffled))
    for name, tensor in first.model.state.items():
        assert torch.equal(tensor, second.model.state[name]), name


def test_fingerprint_tells_probes_apart(scan) -> None:
    probe = scan.probe_modes
    assert probe_fingerprint(probe) == probe_fingerprint(probe * 3.0)  # scale-free
    assert probe_fingerprint(probe) != probe_fingerprint(np.roll(probe, 1, axis=-1))


def test_a_pretrained_model_file_round_trips_and_infers(tmp_path, scan) -> None:
    _, result = _run(_payload(scan))
    path = save_model(result.model, tmp_path / 'm.safetensors')
    loaded = load_model(path)
    assert loaded.metadata['probe_fingerprint'] == result.model.metadata['probe_fingerprint']
    payload = _payload(scan)
    events = list(engine.infer(payload, loaded))
    out = next(e for e in events if isinstance(e, engine.ResultEvent))
    assert out.object.shape == scan.truth_array.shape
    assert np.isfinite(out.object).all()


def test_inference_with_another_probe_warns(scan, caplog) -> None:
    _, result = _run(_payload(scan))
    other = np.roll(scan.probe_modes, 3, axis=-1)
    payload = build_payload(
        scan.counts, scan.bad_pixels, other, scan.positions_px, np.ones_like(scan.truth_array),
        overrides=SMALL,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger='ptychodus_ptychopinn'):
        list(engine.infer(_payload(scan), result.model))
    assert 'pretrained for another probe' not in caplog.text
    with caplog.at_level(logging.WARNING, logger='ptychodus_ptychopinn'):
        list(engine.infer(payload, result.model))
    assert 'pretrained for another probe' in caplog.text


def test_cli_pretrain_then_infer(tmp_path, layout, capsys) -> None:
    model = tmp_path / 'model.safetensors'
    code = main(['pretrain', '--probe', str(layout), '--output', str(model), '--minutes', '5',
                 '--device', 'cpu', '--events', 'json', '-q', *SMALL_SET])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [r['event'] for r in records]
    assert kinds[0] == 'start' and kinds[-1] == 'result' and 'checkpoint' in kinds
    validation = [r['validation_loss'] for r in records if r['event'] == 'epoch']
    assert len(validation) == 4 and validation[-1] < validation[0]
    output = tmp_path / 'out.h5'
    code = main(['infer', '--input', str(layout), '--model', str(model), '--output', str(output),
                 '--device', 'cpu', '-q', '--no-preview'])  # fmt: skip
    assert code == 0
    arrays = read_product_arrays(output)
    assert arrays['object'].ndim == 2 and np.isfinite(arrays['object']).all()
    assert not np.allclose(arrays['object'], 1.0)  # the network's object, not the start


def test_cli_pretrain_rejects_an_empty_budget_before_reading(tmp_path, layout, capsys) -> None:
    code = main(['pretrain', '--probe', str(layout), '--output', str(tmp_path / 'm.safetensors'),
                 '--minutes', '0'])  # fmt: skip
    assert code == 2
    assert 'pretrain_minutes' in capsys.readouterr().err
    assert not (tmp_path / 'm.safetensors').exists()


@pytest.mark.skipif(
    shutil.which('torchrun') is None and not Path(sys.executable).with_name('torchrun').exists(),
    reason='torchrun is not installed with torch here',
)
def test_torchrun_with_two_cpu_processes_writes_one_model(tmp_path, layout) -> None:
    """The issue's command, at a pattern budget instead of a minute (CI time): both ranks
    finish, rank 0 writes one loadable model and the events show a falling loss."""
    torchrun = Path(sys.executable).with_name('torchrun')
    model = tmp_path / 'model.safetensors'
    command = [
        str(torchrun if torchrun.exists() else 'torchrun'), '--standalone', '--nproc-per-node=2',
        '-m', 'ptychodus_ptychopinn', 'pretrain', '--probe', str(layout), '--output', str(model),
        '--minutes', '1', '--device', 'cpu', '--events', 'json', '-q', *SMALL_SET,
    ]  # fmt: skip
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
    results = [r for r in records if r['event'] == 'result']
    assert len(results) == 1  # only rank 0 reports
    validation = [r['validation_loss'] for r in records if r['event'] == 'epoch']
    assert validation[-1] < validation[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.safetensors']
    loaded = load_model(model)
    assert loaded.metadata['pretrain_world_size'] == '2'
    # The pattern budget counts both ranks' patterns.
    assert int(loaded.metadata['pretrain_patterns']) >= 16 * 4 * 4
