"""``precision = mixed``: the network's convolutions in bfloat16, the physics in float32.

Runs on the CPU here and, where torch sees a CUDA device, there too (the accelerator check in
docs/benchmarks.md runs this file on the GPU). No ptychodus import: the engine alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychodus_ptychopinn.config import ModelConfig
from ptychodus_ptychopinn.engine import ResultEvent, infer, pretrain
from ptychodus_ptychopinn.errors import ConfigError
from ptychodus_ptychopinn.factory import build_payload
from ptychodus_ptychopinn.model.generators import CnnGenerator
from ptychodus_ptychopinn.model.precision import set_network_precision
from ptychodus_ptychopinn.model.unrolled import Physics, UnrolledGenerator

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
N = 32


def _randomise_heads(module: torch.nn.Module) -> None:
    """The correctors' last layers start at zero (the net starts as physics); give them
    weights so the network's part of the output is not zero and precision can show."""
    torch.manual_seed(0)
    for sub in module.modules():
        if isinstance(sub, torch.nn.Conv2d) and sub.out_channels == 2:
            torch.nn.init.normal_(sub.weight, std=0.05)


def _dtypes_seen(module: torch.nn.Module) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    for sub in module.modules():
        if isinstance(sub, torch.nn.Conv2d):
            sub.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def _group(device: str) -> tuple[torch.Tensor, torch.Tensor, Physics]:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[-N // 2 : N // 2, -N // 2 : N // 2]
    probe = np.exp(-(xx**2 + yy**2) / (2 * (N / 8) ** 2))[None] * 30
    offsets = torch.tensor([[[0.0, 0.0], [5.3, 0.4], [-0.2, 5.6], [5.1, 5.2]]])
    counts = torch.as_tensor(rng.poisson(40.0, (1, 4, N, N)), dtype=torch.float32)
    physics = Physics(
        torch.as_tensor(probe, dtype=torch.complex64, device=device),
        1.0,
        torch.ones(N, N, dtype=torch.bool, device=device),
    )
    return torch.sqrt(counts).to(device), offsets.to(device), physics


@pytest.mark.parametrize('device', DEVICES)
def test_unrolled_network_runs_in_bfloat16_and_returns_float32_physics(device: str) -> None:
    net = UnrolledGenerator(ModelConfig(n=N, generator='unrolled', width=8, layers=3))
    _randomise_heads(net)
    net.to(device)
    inputs, offsets, physics = _group(device)
    with torch.no_grad():
        reference = net(inputs, offsets, physics, 64)
        seen = _dtypes_seen(net)
        set_network_precision(net, torch.bfloat16)
        mixed = net(inputs, offsets, physics, 64)
    assert seen == {torch.bfloat16}
    assert reference.dtype == mixed.dtype == torch.complex64
    difference = float((mixed - reference).abs().norm() / (reference - 1).abs().norm())
    # bfloat16's 8-bit mantissa: a visible but small change of the network's part only
    assert 0.0 < difference < 0.05


@pytest.mark.parametrize('device', DEVICES)
def test_cnn_generator_runs_in_bfloat16_and_trains(device: str) -> None:
    net = CnnGenerator(ModelConfig(n=N, width=4)).to(device)
    set_network_precision(net, torch.bfloat16)
    seen = _dtypes_seen(net)
    inputs = torch.rand(2, 4, N, N, device=device)
    amplitude, phase = net(inputs)
    assert seen == {torch.bfloat16}
    assert amplitude.dtype == phase.dtype == torch.float32
    (amplitude.mean() + phase.mean()).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads if g is not None)


def _payload(precision: str, device: str, **overrides: object):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2)
    positions = N + grid * (N / 6.0) + rng.uniform(-0.5, 0.5, grid.shape)
    side = int(positions.max() + N + 2)
    yy, xx = np.mgrid[-N // 2 : N // 2, -N // 2 : N // 2]
    probe = np.exp(-(xx**2 + yy**2) / (2 * (N / 8) ** 2)).astype(np.complex64)[None]
    return build_payload(
        rng.poisson(50.0, (len(positions), N, N)).astype(np.uint16),
        None,
        probe,
        positions,
        np.ones((side, side), np.complex64),
        preset='fast',
        overrides={
            'device': device,
            'precision': precision,
            'generator': 'unrolled',
            'width': 4,
            'layers': 2,
            'pretrain_minutes': 0,
            'pretrain_patterns': 2 * 16 * 4,
            'pretrain_epoch_groups': 4,
            'pretrain_batch_size': 2,
            **overrides,
        },
    )


@pytest.mark.parametrize('device', DEVICES)
def test_mixed_pretraining_writes_a_float32_model_that_float32_inference_uses(device: str) -> None:
    (result,) = [e for e in pretrain(_payload('mixed', device)) if isinstance(e, ResultEvent)]
    model = result.model
    assert model.state and all(v.dtype == torch.float32 for v in model.state.values())
    assert all(bool(torch.isfinite(v).all()) for v in model.state.values())
    objects = {}
    for precision in ('float32', 'mixed'):
        events = infer(_payload(precision, device), model)
        (out,) = [e for e in events if isinstance(e, ResultEvent)]
        objects[precision] = out.object
    assert objects['mixed'].dtype == objects['float32'].dtype
    lit = np.abs(objects['float32'] - 1) > 1e-6
    assert lit.any()
    relative = np.linalg.norm((objects['mixed'] - objects['float32'])[lit]) / np.linalg.norm(
        objects['float32'][lit]
    )
    assert relative < 0.05


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="'float32', 'float64', 'mixed'"):
        _payload('half', 'cpu')
