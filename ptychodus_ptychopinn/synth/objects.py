"""Procedural complex objects for pretraining, generated in torch on the training device.

Every family draws two maps in [0, 1] per scene, a *transmission* map ``t`` and a *thickness*
map ``h``; the object is ``(a_min + (1 - a_min) t) exp(i phase_range (h - 1/2))``, with
``a_min`` and ``phase_range`` drawn per scene, so one batch covers weak and strong objects.
Half the scenes tie ``t`` to ``h`` (one material: thicker is darker), half draw them apart.

Families (``FAMILIES``):
- ``dead_leaves``: occluding disks with power-law radii (sharp edges, all scales), the family
  the published recipe pretrains on;
- ``blocks``: occluding rotated rectangles and bars (straight edges, corners: lithography-like);
- ``blobs``: smooth band-limited random fields with a power-law spectrum (soft, biological-like).

Edges are softened by a random Gaussian blur per scene (0 to ``MAX_BLUR_PX``), so the network
sees both sharp and smooth objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import OBJECT_FAMILIES, PretrainConfig

FAMILIES = OBJECT_FAMILIES
MAX_BLUR_PX = 1.5


@dataclass(frozen=True)
class ObjectRecipe:
    """What the pretraining objects look like; recorded in the model file."""

    families: tuple[str, ...] = ('dead_leaves', 'blocks', 'blobs')
    phase_range_max: float = 4.0
    """Largest peak-to-peak phase in radians (each scene draws from [0.3, this])."""
    amplitude_min: float = 0.3
    """Lowest transmission amplitude any scene may reach (each draws a_min in [this, 1])."""

    @classmethod
    def from_config(cls, config: PretrainConfig) -> ObjectRecipe:
        return cls(config.families, config.pretrain_phase_range, config.pretrain_amplitude_min)


def generate_objects(
    recipe: ObjectRecipe,
    count: int,
    size: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """``count`` complex scenes (count, size, size), families mixed evenly at random."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    choice = torch.randint(len(recipe.families), (count,), generator=generator)
    thickness = torch.empty((count, size, size), dtype=real, device=device)
    transmission = torch.empty_like(thickness)
    for index, family in enumerate(recipe.families):
        chosen = (choice == index).nonzero().flatten().tolist()
        if not chosen:
            continue
        maker = _MAKERS[family]
        h = maker(len(chosen), size, generator, device, real)
        t = maker(len(chosen), size, generator, device, real)
        thickness[chosen] = h
        transmission[chosen] = t
    tied = _uniform(count, generator, device, real) < 0.5
    transmission = torch.where(tied[:, None, None], 1.0 - thickness, transmission)
    thickness = _blur(thickness, generator)
    transmission = _blur(transmission, generator)
    a_min = recipe.amplitude_min + (1.0 - recipe.amplitude_min) * _uniform(
        count, generator, device, real
    )
    phase_range = 0.3 + (recipe.phase_range_max - 0.3) * _uniform(count, generator, device, real)
    amplitude = a_min[:, None, None] + (1.0 - a_min[:, None, None]) * transmission
    phase = phase_range[:, None, None] * (thickness - 0.5)
    return torch.polar(amplitude, phase).to(dtype)


def _uniform(
    count: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # Random numbers come from a CPU generator (reproducible on every device), then move.
    return torch.rand(count, generator=generator, dtype=dtype).to(device)


def _grid(size: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.arange(size, device=device, dtype=dtype)
    return axis[None, :, None], axis[None, None, :]  # rows (1, S, 1), columns (1, 1, S)


def dead_leaves(
    count: int,
    size: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    shapes: int = 96,
) -> torch.Tensor:
    """Occluding disks, radii from a power law (r^-3) between 1.5 px and size / 3."""
    r_min, r_max = 1.5, max(size / 3.0, 2.0)
    u = torch.rand((count, shapes), generator=generator, dtype=dtype)
    # Inverse CDF of p(r) ~ r^-3 on [r_min, r_max].
    radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    centre = torch.rand((count, shapes, 2), generator=generator, dtype=dtype) * (size + 8) - 4
    value = torch.rand((count, shapes), generator=generator, dtype=dtype)
    radius, centre, value = radius.to(device), centre.to(device), value.to(device)
    rows, cols = _grid(size, device, dtype)
    background = torch.rand((count, 1, 1), generator=generator, dtype=dtype).to(device)
    dy = rows[:, None] - centre[:, :, 1, None, None]  # (B, K, S, 1)
    dx = cols[:, None] - centre[:, :, 0, None, None]  # (B, K, 1, S)
    inside = dx * dx + dy * dy <= radius[:, :, None, None] ** 2
    return _paint(inside, value, background)


def blocks(
    count: int,
    size: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    shapes: int = 48,
) -> torch.Tensor:
    """Occluding rotated rectangles: squares, bars and lines of 1 px to size / 2."""
    long_side = 1.0 + torch.rand((count, shapes), generator=generator, dtype=dtype) * size / 2
    aspect = torch.rand((count, shapes), generator=generator, dtype=dtype) ** 2
    short_side = torch.clamp(long_side * aspect, min=1.0)
    angle = torch.rand((count, shapes), generator=generator, dtype=dtype) * math.pi
    centre = torch.rand((count, shapes, 2), generator=generator, dtype=dtype) * (size + 8) - 4
    value = torch.rand((count, shapes), generator=generator, dtype=dtype)
    long_side, short_side = long_side.to(device), short_side.to(device)
    angle, centre, value = angle.to(device), centre.to(device), value.to(device)
    rows, cols = _grid(size, device, dtype)
    background = torch.rand((count, 1, 1), generator=generator, dtype=dtype).to(device)
    dy = rows[:, None] - centre[:, :, 1, None, None]  # (B, K, S, 1)
    dx = cols[:, None] - centre[:, :, 0, None, None]  # (B, K, 1, S)
    c, s = torch.cos(angle)[:, :, None, None], torch.sin(angle)[:, :, None, None]
    along = (dx * c + dy * s).abs()
    across = (dy * c - dx * s).abs()
    inside = (along <= long_side[:, :, None, None] / 2) & (
        across <= short_side[:, :, None, None] / 2
    )
    return _paint(inside, value, background)


def _paint(inside: torch.Tensor, value: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Occlusion: each pixel takes the value of the last shape (K, in order) that covers it."""
    shapes = inside.shape[1]
    order = torch.arange(1, shapes + 1, device=inside.device, dtype=torch.int32)
    last = (inside * order[None, :, None, None]).amax(dim=1)  # 0 where nothing covers
    palette = torch.cat([background.reshape(-1, 1), value], dim=1)
    return torch.gather(palette, 1, last.flatten(1).long()).reshape(last.shape)


def blobs(
    count: int,
    size: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Smooth random fields: white noise filtered to a power-law spectrum, scaled to [0, 1]."""
    noise = torch.randn((count, size, size), generator=generator, dtype=dtype).to(device)
    exponent = 1.5 + 1.5 * torch.rand((count, 1, 1), generator=generator, dtype=dtype)
    exponent = exponent.to(device)
    f = torch.fft.fftfreq(size, dtype=dtype, device=device)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1.0 / size)
    spectrum = torch.fft.fft2(noise) * radius[None] ** (-exponent)
    field = torch.fft.ifft2(spectrum).real
    low = field.amin(dim=(-2, -1), keepdim=True)
    high = field.amax(dim=(-2, -1), keepdim=True)
    return (field - low) / (high - low + 1e-12)


_MAKERS = {'dead_leaves': dead_leaves, 'blocks': blocks, 'blobs': blobs}


def _blur(field: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur with a random width per scene (0 to ``MAX_BLUR_PX``), in Fourier space."""
    count, size, _ = field.shape
    sigma = MAX_BLUR_PX * torch.rand((count, 1, 1), generator=generator, dtype=field.dtype)
    f = torch.fft.fftfreq(size, dtype=field.dtype, device=field.device)
    f2 = (f[:, None] ** 2 + f[None, :] ** 2)[None]
    kernel = torch.exp(-2.0 * math.pi**2 * f2 * sigma.to(field.device) ** 2)
    # A narrow Gaussian sampled in Fourier space rings a little at sharp edges: clamp.
    return torch.fft.ifft2(torch.fft.fft2(field) * kernel).real.clamp(0.0, 1.0)
