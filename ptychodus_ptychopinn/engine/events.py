"""What a run tells its caller: one event type per kind of news, plus the trained model.

A run is a generator of these. Consumers (the ptychodus adapter, the CLI, the studio) switch
on the type; none of them needs to know how a stage works.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np
import torch

from ..config import PinnConfig

LossHistory = tuple[tuple[int, float], ...]
"""(progress, loss) pairs, one per epoch, in the order they happened."""


@dataclass(frozen=True)
class TrainedModel:
    """A network ready to save or reuse: config, weights (on the CPU) and input scaling."""

    config: PinnConfig
    state: dict[str, torch.Tensor]
    input_scale: float
    intensity_scale: float
    metadata: dict[str, str] = field(default_factory=dict)

    def with_metadata(self, **values: str) -> TrainedModel:
        """A copy whose metadata also holds ``values`` (what a model file records)."""
        return replace(self, metadata={**self.metadata, **values})


@dataclass(frozen=True)
class BatchEvent:
    """After every optimiser step (or inference batch: ``loss`` is NaN there)."""

    stage: str
    epoch: int
    batch: int
    num_batches: int
    loss: float


@dataclass(frozen=True)
class EpochEvent:
    """After every epoch; ``progress``/``goal`` drive progress bars."""

    stage: str
    epoch: int
    num_epochs: int
    loss: float
    seconds: float
    progress: int
    goal: int
    validation_loss: float | None = None


@dataclass(frozen=True)
class StageEndEvent:
    """A training-like stage ended: why (``STOP_REASONS``), after how many epochs and seconds."""

    stage: str
    reason: str
    epochs: int
    max_epochs: int
    seconds: float
    final_loss: float | None

    @property
    def reason_text(self) -> str:
        return STOP_REASONS.get(self.reason, self.reason)


STOP_REASONS = {
    'epochs': 'reached its epoch ceiling',
    'plateau': 'the loss stopped improving',
    'time': 'its time budget ran out',
}


@dataclass(frozen=True)
class CheckpointEvent:
    """A model worth keeping (pretraining writes one every ``pretrain_checkpoint_every``
    seconds and at the end; ``final`` marks the last). Only the main rank emits these."""

    stage: str
    progress: int
    model: TrainedModel
    final: bool = False


@dataclass(frozen=True)
class SnapshotEvent:
    """The current stitched object and probe (every ``snapshot_every`` epochs)."""

    stage: str
    progress: int
    object: np.ndarray
    probe: np.ndarray
    losses: LossHistory


@dataclass(frozen=True)
class ResultEvent:
    """The last event of a run that finished."""

    object: np.ndarray
    probe: np.ndarray
    losses: LossHistory
    model: TrainedModel
    progress: int
    seconds: float
    validation_losses: LossHistory = ()
    positions: np.ndarray | None = None
    """Refined scan positions (K, 2) as (x, y) object pixels; None when they were fixed."""


Event = Union[BatchEvent, EpochEvent, StageEndEvent, SnapshotEvent, CheckpointEvent, ResultEvent]
