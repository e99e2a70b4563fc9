"""On-the-fly simulation of training groups: procedural objects lit by the experiment's probe.

Each training item is one overlap group shaped like a group of the real scan (its members'
offsets, sub-pixel fractions included, are drawn from the scan's own groups), placed at a
random integer spot on a fresh procedural scene. As the refinement and ptychodus's simulator
do it, each window starts at the integer pixel ``floor(r - (N - 1)/2)`` and is lit by the
probe shifted by the fraction: counts ``s^2 sum_m |fftshift(fft2(P_m(. - f) O_window))|^2``,
drawn from a Poisson distribution at the scan's dose (checked against
``generate_diffraction_data`` in tests/test_synth.py). The true patches are those integer
windows. Bad pixels are zeroed as the engine zeroes them. Everything runs on the training
device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..model.unrolled import window_positions
from ..physics.grid import shifted_probes
from ..physics.propagation import far_field
from .objects import ObjectRecipe, generate_objects


@dataclass
class SimulatedBatch:
    """Counts (B, C, N, N), true patches (B, C, N, N) complex, offsets (B, C, 2)."""

    counts: torch.Tensor
    patches: torch.Tensor
    offsets: torch.Tensor


class GroupSimulator:
    """Draws :class:`SimulatedBatch` es for one probe, dose, detector mask and scan shape."""

    def __init__(
        self,
        probe_modes: torch.Tensor,
        intensity_scale: float,
        good: torch.Tensor,
        group_offsets: np.ndarray,
        recipe: ObjectRecipe,
        *,
        seed: int,
        device: torch.device,
        dose_jitter: float = 0.0,
        groups_per_scene: int = 4,
        chirp: torch.Tensor | None = None,
    ) -> None:
        self.probe = probe_modes.to(device)
        self.chirp = None if chirp is None else chirp.to(device)
        self.scale = float(intensity_scale)
        self.good = good.to(device)
        self.offsets = torch.as_tensor(group_offsets, dtype=torch.float64)
        self.recipe = recipe
        self.device = device
        self.dose_jitter = float(dose_jitter)
        self.n = int(probe_modes.shape[-1])
        reach = float(np.abs(group_offsets).max()) if group_offsets.size else 0.0
        # The scene holds every member's window plus a margin for the sub-pixel shift, and room
        # for ``groups_per_scene`` groups to land at different spots (scenes cost the most).
        self.per_scene = max(int(groups_per_scene), 1)
        self.wander = 0 if self.per_scene == 1 else self.n // 2
        self.scene = self.n + 2 * (math.ceil(reach) + 3) + self.wander
        self.generator = torch.Generator().manual_seed(int(seed))

    @torch.no_grad()
    def draw(self, batch: int) -> SimulatedBatch:
        complex_dtype = self.probe.dtype
        real = torch.float64 if complex_dtype == torch.complex128 else torch.float32
        n, size, g = self.n, self.scene, self.generator
        count = math.ceil(batch / self.per_scene)
        scenes = generate_objects(self.recipe, count, size, g, self.device, complex_dtype)
        scene_of = (torch.arange(batch) // self.per_scene).to(self.device)
        chosen = torch.randint(len(self.offsets), (batch,), generator=g)
        offsets = self.offsets[chosen]  # (B, C, 2), from an integer reference
        wander = torch.randint(-self.wander // 2, self.wander // 2 + 1, (batch, 1, 2), generator=g)
        reference = size // 2 + wander
        corner, frac = window_positions(offsets, n)
        patches = _windows(scenes[scene_of], (reference + corner).to(self.device), n)
        b = patches.shape[0]
        expected = expected_counts(self.probe, patches, frac.to(self.device, real), self.chirp)
        scale = torch.full((b,), self.scale, dtype=torch.float64)
        if self.dose_jitter > 0:
            scale = scale * torch.exp(self.dose_jitter * (torch.rand(b, generator=g) - 0.5))
        expected = expected * (scale**2).to(self.device, real)[:, None, None, None]
        seed = int(torch.randint(2**62, (1,), generator=g))
        noise = torch.Generator(device=self.device).manual_seed(seed)
        counts = torch.poisson(expected, generator=noise)
        counts[..., ~self.good] = 0.0
        return SimulatedBatch(counts, patches, offsets.to(self.device, real))


def expected_counts(
    probe: torch.Tensor,
    windows: torch.Tensor,
    frac: torch.Tensor,
    chirp: torch.Tensor | None = None,
) -> torch.Tensor:
    """Counts (..., N, N) of integer windows (..., N, N) lit by probe modes (M, N, N) shifted
    by each window's fraction (..., 2), times the detector's Fresnel ``chirp`` (N, N), for
    unit intensity scale."""
    shape = windows.shape
    n = shape[-1]
    probes = shifted_probes(probe, frac.reshape(-1, 2), chirp)
    exit_waves = probes * windows.reshape(-1, 1, n, n)
    return far_field(exit_waves).abs().square().sum(dim=1).reshape(shape)


def _windows(scenes: torch.Tensor, corners: torch.Tensor, n: int) -> torch.Tensor:
    """Integer windows (B, C, N, N) of scenes (B, S, S) whose first pixels are ``corners``
    (B, C, 2) as (x, y)."""
    steps = torch.arange(n, device=scenes.device)
    ys = corners[..., 1, None] + steps  # (B, C, N)
    xs = corners[..., 0, None] + steps
    b = torch.arange(scenes.shape[0], device=scenes.device)[:, None, None, None]
    return scenes[b, ys[..., :, None], xs[..., None, :]]
