"""The engine: fit, infer and reconstruct as generators of events (no ptychodus, no Qt).

Modules: ``events`` (what a run reports, and the trained model), ``context`` (the state one run
shares between stages), ``loop`` (the one batch/optimiser loop), one module per stage (``fit``,
``infer``, ``refine``), and ``run`` (the entry points, re-exported here).
"""

from .context import execution_context
from .events import (
    BatchEvent,
    CheckpointEvent,
    EpochEvent,
    Event,
    LossHistory,
    ResultEvent,
    SnapshotEvent,
    StageEndEvent,
    TrainedModel,
)
from .pretrain import PROGRESS_UNITS as PRETRAIN_PROGRESS_UNITS
from .run import infer, network_patches, pretrain, progress_goal, reconstruct, train

__all__ = [
    'BatchEvent',
    'CheckpointEvent',
    'EpochEvent',
    'Event',
    'LossHistory',
    'PRETRAIN_PROGRESS_UNITS',
    'ResultEvent',
    'SnapshotEvent',
    'StageEndEvent',
    'TrainedModel',
    'execution_context',
    'infer',
    'network_patches',
    'pretrain',
    'progress_goal',
    'reconstruct',
    'train',
]
