"""Where a probe (or a group's summed illumination) actually lights the array.

Probes have long faint tails (a defocused zone plate's reach the array edge at 1e-3 of the
peak), so a threshold on intensity keeps nearly the whole array. The box that keeps all but a
small share of the illumination's energy along each axis is what the object is measured in:
the learned corrections of the unrolled generator and the phase synchronisation work there.
"""

from __future__ import annotations

import torch

BOX_ENERGY = 0.01
"""Share of the energy left outside the box on each side, along each axis."""
BOX_MARGIN = 4
"""Pixels added around that box."""


def energy_box(
    intensity: torch.Tensor, share: float = BOX_ENERGY, margin: int = BOX_MARGIN
) -> tuple[slice, slice]:
    """Rows and columns of the last two axes of ``intensity`` (leading axes are summed)."""
    energy = intensity.detach().real
    while energy.ndim > 2:
        energy = energy.sum(dim=0)
    return _span(energy.sum(dim=1), share, margin), _span(energy.sum(dim=0), share, margin)


def _span(profile: torch.Tensor, share: float, margin: int) -> slice:
    size = int(profile.shape[0])
    total = float(profile.sum())
    if not total > 0:
        return slice(0, size)
    cumulative = torch.cumsum(profile.to(torch.float64), dim=0) / total
    low = int((cumulative < share).sum())
    high = int((cumulative < 1.0 - share).sum()) + 1
    return slice(max(low - margin, 0), min(high + margin, size))
