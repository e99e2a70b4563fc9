"""Networks that map scaled diffraction amplitudes to object patches.

Two kinds, registered in ``GENERATORS`` and selected by ``ModelConfig.generator``:
- ``cnn`` takes (B, C, N, N) real inputs and returns amplitude and phase (B, C, N, N); the
  PINN then merges the C patches where they overlap;
- ``unrolled`` (``model.unrolled``, ``needs_physics = True``) also takes the group offsets
  and the scan's physics, and returns C complex patches of one group canvas (consistent by
  construction, so no merge).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..config import ModelConfig
from .precision import network_autocast

BOTTLENECK = 8


def _block(c_in: int, c_out: int) -> nn.Sequential:
    # GELU, not ReLU: with ReLU the self-supervised fit collapsed to a constant, input-blind
    # output (dead units) within a few hundred steps on simulated scans.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GELU(),
    )


class _Decoder(nn.Module):
    def __init__(self, widths: list[int], channels: int) -> None:
        super().__init__()
        stages = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stages.append(nn.Sequential(nn.Upsample(scale_factor=2.0), _block(c_in, c_out)))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x))


class CnnGenerator(nn.Module):
    """Plain encoder-decoder: conv-conv-pool blocks down to 8 x 8, two decoders, no attention.

    Depth follows N (3 poolings at N = 64); the width doubles at each level from ``width``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        depth = int(round(math.log2(config.n / BOTTLENECK)))
        widths = [config.width * 2**i for i in range(depth + 1)]
        channels = config.channels
        encoder: list[nn.Module] = []
        c_in = channels
        for c_out in widths[:-1]:
            encoder += [_block(c_in, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        encoder.append(_block(c_in, widths[-1]))
        self.encoder = nn.Sequential(*encoder)
        reversed_widths = widths[::-1]
        self.amplitude = _Decoder(reversed_widths, channels)
        self.phase = _Decoder(reversed_widths, channels)
        self.amp_max = config.amp_max
        self.autocast_dtype: torch.dtype | None = None
        # Start from a flat, unit-amplitude object: sigmoid(b) * amp_max = 1.
        p = 1.0 / config.amp_max
        amplitude_bias, phase_bias = self.amplitude.head.bias, self.phase.head.bias
        assert amplitude_bias is not None and phase_bias is not None
        with torch.no_grad():
            amplitude_bias.fill_(math.log(p / (1.0 - p)) if p < 1.0 else 4.0)
            self.amplitude.head.weight.mul_(0.1)
            self.phase.head.weight.mul_(0.1)
            phase_bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with network_autocast(x, self.autocast_dtype):
            features = self.encoder(x)
            amp_logits, phase_logits = self.amplitude(features), self.phase(features)
        amplitude = self.amp_max * torch.sigmoid(amp_logits.to(x.dtype))
        phase = torch.pi * torch.tanh(phase_logits.to(x.dtype))
        return amplitude, phase


def _unrolled(config: ModelConfig) -> nn.Module:
    from .unrolled import UnrolledGenerator

    return UnrolledGenerator(config)


GENERATORS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    'cnn': CnnGenerator,
    'unrolled': _unrolled,
}


def build_generator(config: ModelConfig) -> nn.Module:
    return GENERATORS[config.generator](config)
