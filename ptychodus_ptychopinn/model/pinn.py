"""The PINN: a generator followed by the overlap constraint and the far-field forward model."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from ..physics.propagation import predicted_intensity
from ..physics.translate import merge_and_extract
from .generators import build_generator


class Pinn(nn.Module):
    """Generator + merge + forward model. The probe and intensity scale are parameters.

    ``input_scale`` (the dataset constant applied to sqrt(counts)) is a buffer so it travels
    with the weights; inference on another scan reuses it.
    """

    def __init__(
        self,
        config: ModelConfig,
        probe_modes: torch.Tensor,
        intensity_scale: float,
        input_scale: float,
        canvas: int,
    ) -> None:
        super().__init__()
        self.config = config
        self.generator = build_generator(config)
        self.log_scale = nn.Parameter(torch.tensor(math.log(intensity_scale)))
        self.probe = nn.Parameter(torch.view_as_real(probe_modes.clone()))
        self.register_buffer('input_scale', torch.tensor(float(input_scale)))
        self.canvas = canvas

    @property
    def probe_modes(self) -> torch.Tensor:
        return torch.view_as_complex(self.probe)

    @property
    def input_scale_value(self) -> float:
        return float(self.get_buffer('input_scale'))

    @property
    def scale(self) -> torch.Tensor:
        return torch.exp(self.log_scale)

    def merge_weight(self) -> torch.Tensor:
        """Probe intensity (normalised to a maximum of 1): where a patch is trustworthy."""
        intensity = self.probe_modes.detach().abs().square().sum(dim=0)
        return intensity / intensity.max()

    def patches(
        self, inputs: torch.Tensor, offsets: torch.Tensor, channels_out: int | None = None
    ) -> torch.Tensor:
        """Complex object patches (B, C, N, N) after the overlap constraint.

        ``channels_out`` limits the output to the first patches (the anchor, for inference).
        """
        amplitude, phase = self.generator(inputs)
        patches = torch.polar(amplitude, phase)
        if self.config.channels == 1:
            return patches
        return merge_and_extract(
            patches, offsets.to(amplitude.dtype), self.merge_weight(), self.canvas, channels_out
        )

    def forward(
        self, inputs: torch.Tensor, offsets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted counts (B, C, N, N) and the patches that produced them."""
        patches = self.patches(inputs, offsets)
        b, c, n, _ = patches.shape
        intensity = predicted_intensity(self.probe_modes, patches.reshape(b * c, n, n), self.scale)
        return intensity.reshape(b, c, n, n), patches
