"""Pretraining inside ptychodus: ``pinn_pretrained``'s Reconstruct with no model loaded and
``[PINN] PretrainMinutes`` > 0 first pretrains a network for the current product's probe
(no training-data export, no patterns used), keeps it loaded, then infers.

While pretraining, every epoch yields a product that keeps the input object and carries the
pretraining loss history (ptychodus plots product losses live); the held-out validation loss
goes to the log with every epoch. Stop works between epochs, as for any reconstruction.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import Any

from ptychodus.api.product import LossValue
from ptychodus.api.reconstruct import ReconstructInput, ReconstructOutput

from .. import engine
from ..config import PRETRAIN_GENERATOR
from ..engine import CheckpointEvent, EpochEvent, Event, ResultEvent, StageEndEvent, TrainedModel
from ..factory import Payload
from .convert import ProductBuilder

logger = logging.getLogger(__name__)


def pretrain_overrides(minutes: float, explicit: dict[str, Any]) -> dict[str, Any]:
    """Engine keys for pretraining: the budget, and the unrolled network unless one was set."""
    values = dict(explicit)
    values['pretrain_minutes'] = float(minutes)
    values.setdefault('generator', PRETRAIN_GENERATOR)
    return values


def run_pretraining(
    payload: Payload, parameters: ReconstructInput, receive: list[TrainedModel]
) -> Iterator[ReconstructOutput]:
    """Pretrain for ``payload``'s probe, yielding one product per epoch (progress 1 ..
    ``engine.PRETRAIN_PROGRESS_UNITS``); the model is appended to ``receive`` at the end."""
    builder = ProductBuilder(parameters.product)
    initial = parameters.product.object_.get_layer(0)
    history: list[LossValue] = []
    events: Generator[Event, None, None] = engine.pretrain(payload)
    logger.info(
        'Pretraining for this probe: %d x %d, dose %.3g counts per pattern, objects %s, '
        'up to %.3g min.',
        payload.n,
        payload.n,
        payload.mean_total_counts,
        payload.config.pinn.pretrain.pretrain_families,
        payload.config.pinn.pretrain.pretrain_minutes,
    )
    try:
        for event in events:
            if isinstance(event, EpochEvent):
                history.append(LossValue(epoch=event.progress, value=event.loss))
                logger.info(
                    'pretrain epoch %d: loss %.4g, validation loss %.4g (%.1f s)',
                    event.epoch + 1,
                    event.loss,
                    float('nan') if event.validation_loss is None else event.validation_loss,
                    event.seconds,
                )
                product = builder.build(initial, None, list(history))
                yield ReconstructOutput(product=product, progress=event.progress)
            elif isinstance(event, StageEndEvent):
                logger.info(
                    'Pretraining stopped after %d epochs (%.1f s): %s.',
                    event.epochs,
                    event.seconds,
                    event.reason_text,
                )
            elif isinstance(event, ResultEvent):
                receive.append(event.model)
            elif isinstance(event, CheckpointEvent):
                pass  # the final model arrives with the result; ptychodus saves on request
    finally:
        events.close()
