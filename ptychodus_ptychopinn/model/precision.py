"""Mixed precision for the network alone: its convolutions in bfloat16, the physics in float32.

Why only the network: the far-field forward model sums many small terms (FFTs of lit windows,
illumination-normalised updates, Poisson and amplitude likelihoods at 1e4 photons and below)
where bfloat16's 8-bit mantissa would be visible in the result, while convolutions tolerate it
and run several times faster on GPUs with tensor cores. bfloat16 keeps float32's exponent
range, so no loss scaling is needed. A generator reads its ``autocast_dtype`` attribute (set
by :func:`set_network_precision`; ``None``: the input's own dtype) and wraps only its neural
parts in :func:`network_autocast`, casting their outputs back before any physics.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

MIXED_DTYPE = torch.bfloat16


def network_dtype(precision: str) -> torch.dtype | None:
    """The dtype the network's convolutions run in for an ``ExecutionConfig.precision``."""
    return MIXED_DTYPE if precision == 'mixed' else None


def network_autocast(
    like: torch.Tensor, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[object]:
    """Autocast to ``dtype`` on ``like``'s device type, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=like.device.type, dtype=dtype)


def set_network_precision(generator: nn.Module, dtype: torch.dtype | None) -> None:
    """Tell ``generator`` (or the module inside a DDP wrapper) which dtype to autocast to."""
    inner = getattr(generator, 'module', generator)
    inner.autocast_dtype = dtype
