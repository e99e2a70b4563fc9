"""torch.distributed for ``torchrun``: who this process is, the process group, shared decisions.

``torchrun --standalone --nproc-per-node=K -m ptychodus_ptychopinn pretrain ...`` starts K
copies of the CLI with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. Each rank simulates
its own objects from its own seed; gradients are averaged by DistributedDataParallel (gloo
on CPUs, NCCL on CUDA GPUs); only rank 0 writes files and events. Decisions that depend on
the clock (a time budget) are taken by rank 0 and broadcast, so every rank runs the same
number of steps and none waits forever on the others. A rank that fails exits non-zero, and
torchrun then ends the others; collectives also time out (``TIMEOUT``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class World:
    """This process's place in the job (rank 0 of 1 when not started by torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(environ: dict[str, str] | None = None) -> World:
    """The world torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ...)."""
    env = os.environ if environ is None else environ
    size = int(env.get('WORLD_SIZE', '1'))
    return World(
        rank=int(env.get('RANK', '0')),
        size=size,
        local_rank=int(env.get('LOCAL_RANK', '0')),
        local_size=int(env.get('LOCAL_WORLD_SIZE', str(size))),
    )


def rank_device(device: str, world: World) -> str:
    """Each rank on a node takes its own GPU: ``cuda`` (or ``auto`` on a CUDA machine) becomes
    ``cuda:LOCAL_RANK``; explicit indices and the CPU are kept."""
    if not world.distributed:
        return device
    if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()):
        return f'cuda:{world.local_rank}'
    return device


def threads_per_rank(world: World) -> int:
    """CPU threads for one rank: the node's cores shared among its ranks (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(world.local_size, 1))


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the job's process group for the duration (nothing to do for a single process)."""
    if not world.distributed:
        yield
        return
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast_choice(
    value: str | None, choices: tuple[str | None, ...], device_type: str
) -> str | None:
    """Rank 0's ``value`` (one of ``choices``) on every rank; the value itself when alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    device = torch.device('cuda', torch.cuda.current_device()) if device_type == 'cuda' else None
    code = torch.tensor([choices.index(value)], dtype=torch.int64, device=device)
    dist.broadcast(code, src=0)
    return choices[int(code)]


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The average of ``value`` over every rank (the value itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()
