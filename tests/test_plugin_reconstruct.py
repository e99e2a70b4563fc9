"""The PINN reconstructors inside a real headless ptychodus ModelCore (in-process)."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.object import Object  # noqa: E402
from ptychodus.api.probe import ProbeSequence  # noqa: E402
from ptychodus.api.reconstruct import (  # noqa: E402
    ReconstructInput,
    prepare_reconstruct_input,
)

from ptychodus_ptychopinn import engine  # noqa: E402
from ptychodus_ptychopinn.config import PRESETS  # noqa: E402
from ptychodus_ptychopinn.errors import InputError  # noqa: E402
from ptychodus_ptychopinn.plugin import discovery  # noqa: E402
from ptychodus_ptychopinn.plugin.simulation import (  # noqa: E402
    SimulatedScan,
    score_object,
    simulate_scan,
)


@pytest.fixture(scope='module')
def scan() -> SimulatedScan:
    return simulate_scan(pattern_size=32, num_positions=100, photons_per_pattern=1e5, seed=1)


@pytest.fixture(scope='module')
def model() -> Iterator[Any]:
    discovery.install()
    from ptychodus.model import ModelCore

    with ModelCore(log_level=logging.WARNING) as core:
        yield core


@pytest.fixture
def library(model: Any) -> Iterator[Any]:
    library = model.processing_core.pinn_library
    settings = library.settings
    saved = {name: p.get_value() for name, p in settings.group.parameters().items()}
    settings.preset.set_value('fast')
    settings.device.set_value('cpu')
    settings.parameter('NumThreads').set_value(1)  # the test machine's cores are shared
    settings.parameter('RefineTimeLimit').set_value(0.0)  # every epoch runs, even on a busy CI
    yield library
    for name, value in saved.items():
        settings.parameter(name).set_value(value)
    library.slot.model = None


def _input(scan: SimulatedScan) -> ReconstructInput:
    return prepare_reconstruct_input(scan.diffraction, scan.product)


def test_headless_lists_both(model: Any) -> None:
    keys = list(model.processing_core.processing_api.available_reconstructors())
    assert 'pinn_selfsupervised' in keys and 'pinn_pretrained' in keys
    api = model.processing_core.processing_api
    api.set_reconstructor_if_provided('pinn_pretrained')
    assert api.is_reconstructor_trainable()


def test_self_supervised_outputs(library: Any, scan: SimulatedScan) -> None:
    library.settings.parameter('Epochs').set_value(3)  # explicit; refine epochs from 'fast'
    library.settings.parameter('ProbeRefinement').set_value('off')
    recon = library.self_supervised
    goal = recon.get_progress_goal()
    assert goal == 3 + PRESETS['fast']['refine_epochs'] + 1
    outputs = []
    for output in recon.reconstruct(_input(scan)):
        assert recon.get_progress_goal() == goal
        outputs.append(output)
    progress = [o.progress for o in outputs]
    assert progress == list(range(1, goal + 1))  # one output per epoch, agreeing with the goal
    assert recon.get_progress_goal() == goal  # idle again: what the settings would run

    source, last = scan.product, outputs[-1].product
    assert last.object_.get_geometry() == source.object_.get_geometry()
    assert last.object_.num_layers == source.object_.num_layers
    assert last.object_.dtype == source.object_.dtype
    assert last.probes is source.probes  # no probe refinement: the input probe, untouched
    assert last.probe_positions is not None and last.metadata == source.metadata
    assert len(last.probe_positions) == len(source.probe_positions)
    losses = [loss.value for loss in last.losses]
    assert [loss.epoch for loss in last.losses] == [p for p in progress if p != 4]
    assert all(v > 0 for v in losses)  # plotted on a log axis
    assert losses[-1] < losses[0]
    before = score_object(source, scan.truth_product)
    after = score_object(last, scan.truth_product)
    assert after['amp_ssim'] > before['amp_ssim'] + 0.2
    assert after['phase_ssim'] > before['phase_ssim'] + 0.2


def test_probe_refinement_keeps_opr_layout(library: Any, scan: SimulatedScan) -> None:
    settings = library.settings
    settings.parameter('Epochs').set_value(1)
    settings.parameter('RefineEpochs').set_value(1)
    settings.parameter('ProbeRefinement').set_value('on')
    probe = scan.product.probes
    second = probe.get_array()[0] * 0.1
    stacked = ProbeSequence(
        array=np.stack([probe.get_array()[0], second]),
        opr_weights=np.ones((len(scan.product.probe_positions), 2)),
        pixel_geometry=probe.get_pixel_geometry(),
    )
    product = replace(scan.product, probes=stacked)
    parameters = prepare_reconstruct_input(scan.diffraction, product)
    last = list(library.self_supervised.reconstruct(parameters))[-1].product
    out = last.probes
    assert out.get_array().shape == stacked.get_array().shape
    assert out.get_pixel_geometry() == stacked.get_pixel_geometry()
    assert np.array_equal(out.get_array()[1], stacked.get_array()[1])
    assert np.array_equal(out.get_opr_weights(), stacked.get_opr_weights())
    assert not np.array_equal(out.get_array()[0], stacked.get_array()[0])


def test_position_refinement_returns_corrected_positions(library: Any, scan: SimulatedScan) -> None:
    """Positions given 1.5 px wrong: the final product's positions are closer to the truth,
    in ptychodus's own units and mapping, and keep their scan indexes."""
    from ptychodus.api.probe_positions import ProbePositionSequence

    settings = library.settings
    settings.parameter('Epochs').set_value(0)
    settings.parameter('RefineEpochs').set_value(150)
    settings.parameter('PositionRefinement').set_value('on')
    pixel = scan.product.object_.get_pixel_geometry()
    error = np.random.default_rng(7).uniform(-1.5, 1.5, (len(scan.product.probe_positions), 2))
    given = ProbePositionSequence(
        [
            replace(p, x_m=p.x_m + e[0] * pixel.width_m, y_m=p.y_m + e[1] * pixel.height_m)
            for p, e in zip(scan.product.probe_positions, error)
        ]
    )
    product = replace(scan.product, probe_positions=given)
    outputs = list(library.self_supervised.reconstruct(_input(replace(scan, product=product))))
    first = outputs[0].product.probe_positions  # until the run ends: the input's
    assert np.array_equal(first.get_coordinates_x_m(), given.get_coordinates_x_m())
    last = outputs[-1].product.probe_positions
    geometry = scan.product.object_.get_geometry()

    def error_px(positions: ProbePositionSequence) -> float:
        x = geometry.map_probe_positions_to_object_x_px(positions)
        y = geometry.map_probe_positions_to_object_y_px(positions)
        delta = np.stack([x, y], axis=-1) - scan.positions_px
        return float(np.sqrt(np.mean(np.sum((delta - delta.mean(0)) ** 2, axis=1))))

    assert list(last.get_indexes()) == list(given.get_indexes())
    # measured: 1.24 px -> 0.65 px after 60 epochs, 0.24 px after 150
    assert error_px(last) < 0.5 * error_px(given), (error_px(given), error_px(last))


def test_multilayer_object_is_a_clear_error(library: Any, scan: SimulatedScan) -> None:
    obj = scan.product.object_
    layered = Object(
        array=np.concatenate([obj.get_array(), obj.get_array()]),
        pixel_geometry=obj.get_pixel_geometry(),
        center=obj.get_center(),
        layer_spacing_m=[1e-6],
    )
    parameters = prepare_reconstruct_input(scan.diffraction, replace(scan.product, object_=layered))
    with pytest.raises(InputError, match='layers'):
        list(library.self_supervised.reconstruct(parameters))


def test_missing_device_is_an_error(library: Any, scan: SimulatedScan) -> None:
    library.settings.device.set_value('cuda:7')
    with pytest.raises(InputError, match='not available'):
        list(library.self_supervised.reconstruct(_input(scan)))


def test_close_stops_within_one_epoch_and_frees_the_model(
    library: Any, scan: SimulatedScan, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[weakref.ref[Any]] = []
    calls = [0]

    class CountingPinn(engine.context.Pinn):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            created.append(weakref.ref(self))

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return super().forward(*args, **kwargs)

    monkeypatch.setattr(engine.context, 'Pinn', CountingPinn)
    library.settings.parameter('Epochs').set_value(200)
    library.settings.parameter('BatchSize').set_value(16)
    run = library.self_supervised.reconstruct(_input(scan))
    first = next(run)
    second = next(run)
    assert (first.progress, second.progress) == (1, 2)
    batches_per_epoch = -(-len(scan.counts) // 16)
    assert calls[0] == 2 * batches_per_epoch  # suspended at the epoch boundary
    run.close()  # what ptychodus's Stop does (it breaks out of its loop)
    assert calls[0] == 2 * batches_per_epoch
    idle_goal = 200 + PRESETS['fast']['refine_epochs'] + 1
    assert library.self_supervised.get_progress_goal() == idle_goal  # idle again
    del run, first, second
    gc.collect()
    assert len(created) == 1 and created[0]() is None


def test_one_output_per_epoch_with_sparse_snapshots(library: Any, scan: SimulatedScan) -> None:
    settings = library.settings
    settings.parameter('Epochs').set_value(4)
    settings.parameter('RefineEpochs').set_value(5)
    settings.parameter('SnapshotEvery').set_value(3)
    outputs = list(library.self_supervised.reconstruct(_input(scan)))
    assert [o.progress for o in outputs] == list(range(1, 4 + 5 + 2))
    objects = [o.product.object_.get_array() for o in outputs]
    assert np.array_equal(objects[0], objects[1])  # epochs 1-2: no snapshot yet, same object
    assert not np.array_equal(objects[1], objects[2])  # epoch 3 brings a snapshot
    assert [len(o.product.losses) for o in outputs[:4]] == [1, 2, 3, 4]  # losses every epoch
