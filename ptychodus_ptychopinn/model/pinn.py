"""The PINN: a generator followed by the overlap constraint and the far-field forward model."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..physics.propagation import predicted_intensity
from ..physics.translate import canvas_size, merge_and_extract
from .generators import build_generator
from .unrolled import Physics


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
        good: torch.Tensor | None = None,
        chirp: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.generator = build_generator(config)
        self.log_scale = nn.Parameter(torch.tensor(math.log(intensity_scale)))
        self.probe = nn.Parameter(torch.view_as_real(probe_modes.clone()), requires_grad=False)
        self.register_buffer('input_scale', torch.tensor(float(input_scale)))
        n = probe_modes.shape[-1]
        mask = torch.ones((n, n), dtype=torch.bool) if good is None else good.to(torch.bool)
        self.register_buffer('good', mask, persistent=False)
        # The detector's Fresnel chirp on every exit wave (real view: follows dtype moves).
        real_chirp = None if chirp is None else torch.view_as_real(chirp.clone())
        self.register_buffer('window_chirp', real_chirp, persistent=False)
        self.canvas = canvas

    @property
    def probe_modes(self) -> torch.Tensor:
        return torch.view_as_complex(self.probe)

    @property
    def chirp(self) -> torch.Tensor | None:
        """The Fresnel chirp (N, N) that multiplies every window's probe; None: Fraunhofer."""
        chirp = self.get_buffer('window_chirp')
        return None if chirp is None else torch.view_as_complex(chirp)

    @property
    def input_scale_value(self) -> float:
        return float(self.get_buffer('input_scale'))

    def canvas_for(self, offsets: torch.Tensor) -> int:
        """A physics-aware generator's canvas: whatever holds these groups (or tiles)."""
        return canvas_size(self.config.n, float(offsets.detach().abs().max()))

    def _physics(self) -> Physics:
        return Physics(
            self.probe_modes.detach() * self.scale,
            self.input_scale_value,
            self.get_buffer('good'),
            self.chirp,
        )

    def patch_positions(self, positions: np.ndarray) -> np.ndarray:
        """Where the patches this network returns for scan ``positions`` (K, 2) sit, in the
        stitcher's convention: a physics-aware generator returns integer windows, which sit at
        ``floor(r - (N - 1)/2) + (N - 1)/2``; the others return sub-pixel patches at ``r``."""
        if not self.physics_aware:
            return positions
        half = (self.config.n - 1) / 2.0
        return np.floor(np.asarray(positions) - half) + half

    @property
    def physics_aware(self) -> bool:
        """Whether the generator runs the forward model itself (its C patches then agree by
        construction and need no merge)."""
        inner = getattr(self.generator, 'module', self.generator)  # under DDP, the wrapped one
        return bool(getattr(inner, 'needs_physics', False))

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
        if self.physics_aware:
            canvas = self.canvas_for(offsets)
            patches = self.generator(inputs, offsets.to(inputs.dtype), self._physics(), canvas)
            return patches if channels_out is None else patches[:, :channels_out]
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
        if self.physics_aware:  # windows lit by sub-pixel shifted probes: the generator knows
            patches, counts = self.generator(
                inputs,
                offsets.to(inputs.dtype),
                self._physics(),
                self.canvas_for(offsets),
                with_counts=True,
            )
            return counts, patches
        patches = self.patches(inputs, offsets)
        b, c, n, _ = patches.shape
        probe = self.probe_modes if self.chirp is None else self.probe_modes * self.chirp
        intensity = predicted_intensity(probe, patches.reshape(b * c, n, n), self.scale)
        return intensity.reshape(b, c, n, n), patches
