"""The ``unrolled`` generator: a fixed number of physics layers with learned corrections.

Measured (docs/pretraining.md): one diffraction pattern does not determine its patch (a
gradient fit of a single pattern with the known probe reaches zero loss at 0.6 relative
error), while a group of 4 overlapping patterns does (0.02 after 100 gradient steps). A
feed-forward CNN that has to learn that inversion from data learns slowly on a CPU. This
generator builds the overlap and the forward model into the network instead:

    X_0 = 1 on the group's canvas
    X_{k+1} = X_k + a_k D(X_k) + CNN_k(X_k, D(X_k), illumination)      k = 0 .. L-1

where ``D`` is one data-consistency layer: take the C windows of the group from the canvas,
light them with the scan's probe, replace the far-field modulus by the measured one (bad
pixels keep the model's), propagate back and add the corrections onto the canvas, normalised
by the illumination (the update of ePIE, for the whole group at once). ``a_k`` and the small
per-layer CNNs are learned. The same L layers run at training and at inference: nothing is
optimised per scan, so inference is one forward pass. The probe and the intensity scale are
the scan's (inputs, not weights).

Then ``tail_layers`` plain layers ``X <- X + D(X)`` (no weights). In the first half of them
``D`` is applied in turn to interleaved sub-batches of ``tail_batch`` windows, each seeing the
canvas the previous one left (ePIE's sequential order; a group no larger than ``tail_batch``
is one sub-batch, so training on small clusters is unchanged). Measured on whole 500-point
scans (docs/pretraining.md): the whole-group average leaves smooth phase errors across the
scan that it removes only slowly, which the sequential sweeps remove; the second half, over
all windows at once, then averages out the sub-batches' noise (at 1e4 photons it matters).

At high dose (:data:`SWEEP_MOMENTUM_MIN_COUNTS` mean counts per good pixel, from the group's
own patterns), over at least :data:`SWEEP_MOMENTUM_MIN_SWEEPS` sweeps, the sequential sweeps
carry momentum from one sweep to the next (mPIE's): the smooth errors they leave decay several
times faster for the same FFTs. At low dose they stay plain sweeps (with momentum they fit the
noise sooner).

Geometry, as the refinement and ptychodus's simulator do it: a window starts at the integer
pixel ``floor(r - (N - 1)/2)`` and is lit by the probe shifted by the fraction, so the canvas
is only ever indexed, never interpolated. Offsets are relative to an integer reference pixel
(``data.grouping``), so their fractions are the members' own. The patches returned are those
integer windows (see :func:`window_positions` for where they sit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..physics.grid import shifted_probes
from ..physics.illumination import energy_box
from .precision import network_autocast

PRECONDITIONER_DELTA = 0.1
"""Regulariser of the illumination normalisation, a share of the group's brightest pixel."""
SUB_BATCH_SEED = 0
"""Seed of the fixed order in which the tail's sequential sub-batches take the windows."""
SWEEP_MOMENTUM = 0.5
"""Momentum of the tail's sequential sweeps (mPIE's, Maiden et al. 2017): after each sweep the
canvas moves on by this share of the running sum of the sweeps' changes. Measured (network
alone, docs/pretraining.md): phase SSIM +0.001 to +0.018 at N = 64 and 1e6 photons on four
scans, +0.06 to +0.07 at N = 128 (plain physics); 0.6 and above unstable on a Siemens star."""
SWEEP_MOMENTUM_MIN_SWEEPS = 8
"""The momentum needs at least this many sweeps (``tail_layers`` >= 16): over 4 its transient
had not settled (measured, 4 sweeps + 12 whole-group layers, 1e6: dead leaves 0.953 -> 0.968
but a Siemens star 0.994 -> 0.974; over 8 both gain, over 12 and 16 too)."""
SWEEP_MOMENTUM_MIN_COUNTS = 30.0
"""The momentum applies from this many mean counts per good detector pixel up (1e6 photons:
244 at N = 64, 61 at N = 128). Below it the sweeps fit the noise sooner with it: measured phase
SSIM -0.003 at 7 counts (3e4 photons, N = 64), -0.006 at 2.4 (1e4), neutral at 24 (1e5)."""


@dataclass(frozen=True)
class Physics:
    """What the physics layers need from the scan: probe modes already multiplied by the
    intensity scale (M, N, N), the input scaling, the good-pixel mask (N, N) and the
    detector's Fresnel chirp (N, N; None: Fraunhofer)."""

    probe: torch.Tensor
    input_scale: float
    good: torch.Tensor
    chirp: torch.Tensor | None = None


def window_positions(offsets: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets (..., 2) from an integer reference -> integer window corners and fractions."""
    start = offsets - (n - 1) / 2.0
    corner = torch.floor(start)
    return corner.long(), start - corner


class _SmallUNet(nn.Module):
    """Two levels on the canvas; the last layer starts at zero (the net starts as physics)."""

    def __init__(self, c_in: int, c_out: int, width: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(c_in, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
        )
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2),
            nn.GELU(),
        )
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.GELU())
        self.head = nn.Conv2d(width, c_out, 1)
        nn.init.zeros_(self.head.weight)
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        low = self.up(self.down(skip))
        pad_rows = skip.shape[-2] - low.shape[-2]
        pad_cols = skip.shape[-1] - low.shape[-1]
        if pad_rows or pad_cols:
            low = nn.functional.pad(low, (0, pad_cols, 0, pad_rows))
        return self.head(self.dec(torch.cat([low, skip], dim=1)))


FEATURES = 7
"""Corrector inputs: the canvas (re, im, |.|), the update (re, im, |.|), the illumination."""


class UnrolledGenerator(nn.Module):
    """Group of C patterns (+ offsets, + the scan's physics) -> C complex windows."""

    needs_physics = True

    def __init__(self, config: ModelConfig, layers: int | None = None) -> None:
        super().__init__()
        layers = config.layers if layers is None else layers
        self.n = config.n
        self.steps = nn.Parameter(torch.full((layers,), 1.0))
        self.correctors = nn.ModuleList(
            _SmallUNet(FEATURES, 2, config.width) for _ in range(layers)
        )
        self.tail_layers = config.tail_layers
        self.tail_batch = config.tail_batch
        self.autocast_dtype: torch.dtype | None = None

    def forward(
        self,
        inputs: torch.Tensor,
        offsets: torch.Tensor,
        physics: Physics,
        canvas: int,
        with_counts: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Windows (B, C, N, N); with ``with_counts`` also the counts they predict."""
        b, c, n, _ = inputs.shape
        real = inputs.dtype
        cplx = torch.complex128 if real == torch.float64 else torch.complex64
        corner, frac = window_positions(offsets, n)
        probes = shifted_probes(physics.probe.to(cplx), frac.reshape(-1, 2).to(real), physics.chirp)
        probes = probes.reshape(b, c, *probes.shape[1:])  # (B, C, M, N, N)
        amplitude = torch.fft.ifftshift(inputs / physics.input_scale, dim=(-2, -1))
        good = torch.fft.ifftshift(physics.good, dim=(-2, -1))
        index = _canvas_index(corner, n, canvas)  # (B, C*N*N) flat canvas indices
        lit = _place(probes.abs().square().sum(dim=2).to(real), index, b, canvas)
        lit_max = lit.amax(dim=(-2, -1), keepdim=True)
        preconditioner = lit + PRECONDITIONER_DELTA * lit_max
        lit_norm = lit / lit_max
        rows, cols = energy_box(lit)
        x = torch.ones((b, canvas, canvas), dtype=cplx, device=inputs.device)
        group = _Group(probes, index, amplitude, good, preconditioner, c, n, canvas)
        for step, corrector in zip(self.steps, self.correctors):
            delta = group.consistency(x)
            # The CNN sees only the lit part of the canvas, where the object is measured.
            xc, dc = x[:, rows, cols], delta[:, rows, cols]
            features = torch.stack(
                [xc.real - 1, xc.imag, xc.abs() - 1, dc.real, dc.imag, dc.abs(),
                 lit_norm[:, rows, cols]],
                dim=1,
            ).to(real)  # fmt: skip
            with network_autocast(features, self.autocast_dtype):
                correction = corrector(features).to(real)
            update = torch.zeros_like(x)
            update[:, rows, cols] = torch.complex(correction[:, 0], correction[:, 1])
            x = x + step * delta + update
        x = self._tail(x, group, amplitude, good)
        windows = _take(x, index, c, n)
        if not with_counts:
            return windows
        far = torch.fft.fft2(probes * windows[:, :, None], norm='ortho')
        counts = torch.fft.fftshift(far.abs().square().sum(dim=2), dim=(-2, -1))
        return windows, counts

    def _tail(
        self, x: torch.Tensor, group: _Group, amplitude: torch.Tensor, good: torch.Tensor
    ) -> torch.Tensor:
        """The plain layers: sequential sweeps (with momentum at high dose), then whole-group
        ones. One sub-batch (training clusters): all layers alike, no momentum."""
        sequential = group.sub_batches(self.tail_batch) if self.tail_layers > 1 else [group]
        sweeps, momentum = self.tail_layers // 2, 0.0
        if (
            len(sequential) > 1
            and sweeps >= SWEEP_MOMENTUM_MIN_SWEEPS
            and sweep_counts(amplitude, good) >= SWEEP_MOMENTUM_MIN_COUNTS
        ):
            momentum = SWEEP_MOMENTUM
        velocity = torch.zeros_like(x) if momentum else None
        for layer in range(self.tail_layers):
            if layer < sweeps:
                before = x
                for part in sequential:
                    x = x + part.consistency(x)
                if velocity is not None:
                    velocity = momentum * velocity + (x - before)
                    x = x + momentum * velocity
            else:
                x = x + group.consistency(x)
        return x


def sweep_counts(amplitude: torch.Tensor, good: torch.Tensor) -> float:
    """Mean measured counts per good detector pixel of a batch of groups (the moduli squared)."""
    return float(amplitude.square()[..., good].mean())


@dataclass(frozen=True)
class _Group:
    """What one data-consistency step over a batch of group canvases needs."""

    probes: torch.Tensor  # (B, C, M, N, N), shifted by each window's fraction
    index: torch.Tensor  # (B, C * N * N) flat canvas indices of the windows
    amplitude: torch.Tensor  # (B, C, N, N) measured moduli, DC at the corner
    good: torch.Tensor  # (N, N), DC at the corner
    preconditioner: torch.Tensor  # (B, S, S)
    c: int
    n: int
    canvas: int

    def consistency(self, x: torch.Tensor) -> torch.Tensor:
        """``D(x)``: the illumination-normalised correction that replaces every window's
        far-field modulus by the measured one (bad pixels keep the model's)."""
        windows = _take(x, self.index, self.c, self.n)
        far = torch.fft.fft2(self.probes * windows[:, :, None], norm='ortho')
        modulus = torch.sqrt(far.abs().square().sum(dim=2, keepdim=True) + 1e-12)
        ratio = torch.where(self.good, self.amplitude[:, :, None] / modulus, 1.0)
        back = torch.fft.ifft2((ratio - 1.0) * far, norm='ortho')
        residual = (self.probes.conj() * back).sum(dim=2)  # (B, C, N, N)
        return _place(residual, self.index, x.shape[0], self.canvas) / self.preconditioner

    def sub_batches(self, size: int) -> list[_Group]:
        """The group split into interleaved sub-batches of at most ``size`` windows (a fixed
        pseudo-random order, so inference is deterministic), each normalised by its own
        illumination; ``[self]`` when the group is no larger (or ``size`` is 0)."""
        count = -(-self.c // size) if size > 0 else 1
        if count <= 1:
            return [self]
        order = torch.randperm(self.c, generator=torch.Generator().manual_seed(SUB_BATCH_SEED))
        b, n = self.index.shape[0], self.n
        index = self.index.reshape(b, self.c, n * n)
        parts = []
        for k in range(count):
            chosen = order[k::count].to(self.index.device)
            probes = self.probes[:, chosen]
            flat = index[:, chosen].reshape(b, -1)
            lit = _place(probes.abs().square().sum(dim=2), flat, b, self.canvas)
            preconditioner = lit + PRECONDITIONER_DELTA * lit.amax(dim=(-2, -1), keepdim=True)
            parts.append(
                _Group(probes, flat, self.amplitude[:, chosen], self.good, preconditioner,
                       len(chosen), n, self.canvas)
            )  # fmt: skip
        return parts


def _canvas_index(corner: torch.Tensor, n: int, canvas: int) -> torch.Tensor:
    """Flat canvas indices of every window pixel (B, C * N * N); the canvas centre is the
    group's integer reference pixel."""
    origin = corner + canvas // 2  # (B, C, 2) as (x, y)
    if int(origin.min()) < 0 or int(origin.max()) + n > canvas:
        raise ValueError(f'group windows do not fit a {canvas}-pixel canvas')
    steps = torch.arange(n, device=corner.device)
    ys = origin[..., 1, None] + steps  # (B, C, N)
    xs = origin[..., 0, None] + steps
    flat = ys[..., :, None] * canvas + xs[..., None, :]  # (B, C, N, N)
    return flat.reshape(corner.shape[0], -1)


def _take(x: torch.Tensor, index: torch.Tensor, c: int, n: int) -> torch.Tensor:
    b = x.shape[0]
    return torch.gather(x.reshape(b, -1), 1, index).reshape(b, c, n, n)


def _place(values: torch.Tensor, index: torch.Tensor, b: int, canvas: int) -> torch.Tensor:
    """Sum of windows (B, C, N, N) added onto a zero canvas at ``index`` -> (B, S, S)."""
    out = torch.zeros((b, canvas * canvas), dtype=values.dtype, device=values.device)
    out = out.scatter_add(1, index, values.reshape(b, -1))
    return out.reshape(b, canvas, canvas)
