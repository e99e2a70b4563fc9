"""The state one run shares between its stages: device, dtypes, the network, tensors, history.

:class:`RunContext` is built once per run from the payload and dropped (``close``) when the
run ends, however it ends, so a cancelled or failed run frees its memory. Stages are plain
functions of a context (see ``fit``, ``infer``, ``refine``).
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Iterator

import numpy as np
import torch

from ..config import ExecutionConfig, PinnConfig
from ..device import release_memory, resolve_device
from ..factory import Payload
from ..model.pinn import Pinn
from ..model.precision import network_dtype, set_network_precision
from ..physics.losses import LOSS_FUNCTIONS
from ..physics.propagation import initial_intensity_scale
from ..stitch import Stitcher
from .events import TrainedModel


@contextlib.contextmanager
def execution_context(execution: ExecutionConfig) -> Iterator[torch.device]:
    """Apply threads, seed and determinism for one run and restore torch's global state after."""
    device = resolve_device(execution.device)
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        if execution.num_threads > 0:
            torch.set_num_threads(execution.num_threads)
        torch.manual_seed(execution.seed)
        if execution.deterministic:
            torch.use_deterministic_algorithms(True)
        yield device
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)
        release_memory(device)


def drop_frame_locals(exc: BaseException) -> None:
    """Forget the locals of the finished frames in ``exc``'s traceback.

    A raised error keeps its traceback's frames, and with them the network, optimiser state
    and batch tensors, alive for as long as anyone holds the error: ptychodus keeps the last
    one until the next run, so a failed run would pin the model (and accelerator memory)
    in a GUI session. File and line information, which is what gets logged, stays.
    """
    traceback.clear_frames(exc.__traceback__)


class RunContext:
    """Payload tensors on the device, the network, and the run's loss history and progress."""

    def __init__(
        self, payload: Payload, config: PinnConfig, model: TrainedModel | None, device: torch.device
    ) -> None:
        self.payload = payload
        self.config = config
        self.device = device
        execution = payload.config.execution
        self.real = torch.float64 if execution.precision == 'float64' else torch.float32
        self.complex = torch.complex128 if self.real == torch.float64 else torch.complex64
        self.rng = np.random.default_rng(execution.seed)
        good_fraction = float(payload.good.mean())
        probe = torch.as_tensor(payload.probe_modes).to(self.complex)
        scale = initial_intensity_scale(payload.mean_total_counts, probe, good_fraction)
        in_scale = model.input_scale if model is not None else payload.input_scale
        good = torch.as_tensor(payload.good)
        chirp = None if payload.chirp is None else torch.as_tensor(payload.chirp).to(self.complex)
        self._pinn: Pinn | None = Pinn(
            config.model, probe, scale, in_scale, payload.canvas, good, chirp=chirp
        )
        if model is not None:
            self._pinn.generator.load_state_dict(model.state)
        self._pinn.to(device=device, dtype=self.real)
        set_network_precision(self._pinn.generator, network_dtype(execution.precision))
        self.good: torch.Tensor | None = torch.as_tensor(payload.good, device=device)
        self._good_np = np.asarray(payload.good)
        self.loss_fn = LOSS_FUNCTIONS[config.train.loss]
        self.losses: list[tuple[int, float]] = []
        self.validation_losses: list[tuple[int, float]] = []
        self.progress = 0
        self.started = time.perf_counter()

    @property
    def pinn(self) -> Pinn:
        if self._pinn is None:
            raise RuntimeError('the run is closed')
        return self._pinn

    @property
    def good_mask(self) -> torch.Tensor:
        if self.good is None:
            raise RuntimeError('the run is closed')
        return self.good

    def close(self) -> None:
        """Drop every tensor this run holds (the caller releases the device's cache)."""
        self._pinn = None
        self.good = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    # -- batches ---------------------------------------------------------------------------

    def measured(self, indices: np.ndarray) -> torch.Tensor:
        """Counts of scan points ``indices`` (any shape) on the device; bad pixels zeroed."""
        flat = indices.reshape(-1)
        counts = np.asarray(self.payload.counts[flat], dtype=np.float32)
        counts = counts.reshape(*indices.shape, *counts.shape[-2:])
        counts[..., ~self._good_np] = 0.0
        return torch.from_numpy(counts).to(device=self.device, dtype=self.real)

    def network_input(self, measured: torch.Tensor) -> torch.Tensor:
        """``scale * sqrt(I)``; bad pixels are already zero in ``measured`` (no invented data)."""
        return torch.sqrt(measured) * self.pinn.input_scale_value

    def offsets(self, groups: np.ndarray) -> torch.Tensor:
        """Each group member's offset from its group centre, in object pixels (B, C, 2)."""
        offsets = self.payload.groups.offsets[groups]
        return torch.as_tensor(offsets, device=self.device, dtype=self.real)

    def positions(self, indices: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(
            self.payload.positions[indices], device=self.device, dtype=torch.float64
        )

    def stitcher(self) -> Stitcher:
        """An empty stitcher on the product's object grid, weighted by the probe intensity."""
        weight = self.pinn.probe_modes.detach().abs().square().sum(dim=0)
        shape = self.payload.object_init.shape
        return Stitcher((shape[0], shape[1]), weight, self.device, self.complex)

    def probe_numpy(self) -> np.ndarray:
        return self.pinn.probe_modes.detach().cpu().numpy()

    def history(self) -> tuple[tuple[int, float], ...]:
        return tuple(self.losses)

    def trained_model(self) -> TrainedModel:
        """The network as it is now, on the CPU in float32 (what model files hold)."""
        pinn = self.pinn
        state = {
            k: v.detach().to('cpu', torch.float32).clone()
            for k, v in pinn.generator.state_dict().items()
        }
        return TrainedModel(
            config=self.config,
            state=state,
            input_scale=pinn.input_scale_value,
            intensity_scale=float(pinn.scale.detach()),
        )
