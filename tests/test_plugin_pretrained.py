"""pinn_pretrained: export training data, train, save, load, infer, fine-tune (real ptychodus)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.reconstruct import prepare_reconstruct_input  # noqa: E402

from ptychodus_ptychopinn.errors import InputError  # noqa: E402
from ptychodus_ptychopinn.plugin import discovery  # noqa: E402
from ptychodus_ptychopinn.plugin.simulation import (  # noqa: E402
    SimulatedScan,
    save_layout,
    simulate_scan,
)

TRAIN_EPOCHS = 3


@pytest.fixture(scope='module')
def scan() -> SimulatedScan:
    return simulate_scan(pattern_size=32, num_positions=80, photons_per_pattern=1e5, seed=2)


@pytest.fixture(scope='module')
def model() -> Iterator[Any]:
    discovery.install()
    from ptychodus.model import ModelCore

    with ModelCore(log_level=logging.WARNING) as core:
        settings = core.processing_core.pinn_library.settings
        settings.preset.set_value('fast')
        settings.device.set_value('cpu')
        settings.parameter('NumThreads').set_value(1)  # the test machine's cores are shared
        settings.parameter('Epochs').set_value(TRAIN_EPOCHS)
        yield core


@pytest.fixture(scope='module')
def trained(model: Any, scan: SimulatedScan, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Export through ptychodus's API, then Train from that directory (as the GUI does)."""
    layout = save_layout(tmp_path_factory.mktemp('layout'), scan)
    workflow = model.workflow_api
    diffraction = workflow.load_assembled_diffraction_data(layout / 'diffraction.h5')
    product = workflow.load_product(layout / 'product.h5', diffraction=diffraction)
    data = tmp_path_factory.mktemp('training')
    product.export_training_data(data / 'scan', algorithm='pinn_pretrained')
    assert (data / 'scan.h5').is_file()
    pretrained = model.processing_core.pinn_library.pretrained
    outputs = list(pretrained.train(data, data))
    return data, outputs


def test_train_yields_losses_and_saves_the_model(model: Any, trained: Any) -> None:
    data, outputs = trained
    assert [o.progress for o in outputs] == [*range(1, TRAIN_EPOCHS + 1), TRAIN_EPOCHS]
    last = outputs[-1]
    assert [v.epoch for v in last.training_loss] == list(range(1, TRAIN_EPOCHS + 1))
    assert [v.epoch for v in last.validation_loss] == list(range(1, TRAIN_EPOCHS + 1))
    assert all(np.isfinite(v.value) for v in [*last.training_loss, *last.validation_loss])
    assert (data / 'model.safetensors').is_file()
    assert model.processing_core.pinn_library.pretrained.is_model_loaded()


def test_save_load_infer_identical(
    model: Any, trained: Any, scan: SimulatedScan, tmp_path: Path
) -> None:
    library = model.processing_core.pinn_library
    pretrained = library.pretrained
    parameters = prepare_reconstruct_input(scan.diffraction, scan.product)
    assert pretrained.get_progress_goal() == 1
    first = list(pretrained.reconstruct(parameters))
    assert [o.progress for o in first] == [1]

    api = model.processing_core.processing_api
    path = tmp_path / 'saved.safetensors'
    api.save_model_to_file(path, algorithm='pinn_pretrained')
    library.slot.model = None
    assert not pretrained.is_model_loaded()
    api.load_model_from_file(path, algorithm='pinn_pretrained')
    assert pretrained.is_model_loaded()
    second = list(pretrained.reconstruct(parameters))
    a = first[-1].product.object_.get_array()
    b = second[-1].product.object_.get_array()
    assert np.array_equal(a, b)
    assert first[-1].product.object_.get_geometry() == scan.product.object_.get_geometry()


def test_fine_tuning_and_warm_start(
    model: Any, trained: Any, scan: SimulatedScan, caplog: pytest.LogCaptureFixture
) -> None:
    library = model.processing_core.pinn_library
    settings = library.settings
    parameters = prepare_reconstruct_input(scan.diffraction, scan.product)
    settings.fine_tune_epochs.set_value(1)
    settings.infer_refine_epochs.set_value(2)
    try:
        goal = library.pretrained.get_progress_goal()
        assert goal == 4
        outputs = list(library.pretrained.reconstruct(parameters))
        assert [o.progress for o in outputs] == [1, 2, 3, 4]
        assert [v.epoch for v in outputs[-1].product.losses] == [1, 3, 4]
    finally:
        settings.fine_tune_epochs.set_value(0)
        settings.infer_refine_epochs.set_value(0)

    settings.parameter('RefineEpochs').set_value(0)
    try:
        with caplog.at_level(logging.INFO, logger='ptychodus_ptychopinn'):
            outputs = list(library.self_supervised.reconstruct(parameters))
        assert 'starting from the model' in caplog.text
        assert outputs[-1].progress == TRAIN_EPOCHS + 1
    finally:
        settings.parameter('RefineEpochs').set_value(-1)


def test_batch_train_from_a_layout_directory(
    model: Any, scan: SimulatedScan, tmp_path: Path
) -> None:
    layout = save_layout(tmp_path / 'in', scan)
    out = tmp_path / 'out'
    out.mkdir()
    model.processing_core.processing_api.set_reconstructor_if_provided('pinn_pretrained')
    settings = model.processing_core.pinn_library.settings
    settings.parameter('Epochs').set_value(1)
    try:
        code = model.batch_mode_execute('train', layout, out)
    finally:
        settings.parameter('Epochs').set_value(TRAIN_EPOCHS)
    assert int(code) == 0
    assert (out / 'model.safetensors').is_file()


def test_no_model_is_a_clear_error(model: Any, scan: SimulatedScan) -> None:
    library = model.processing_core.pinn_library
    saved, library.slot.model = library.slot.model, None
    try:
        parameters = prepare_reconstruct_input(scan.diffraction, scan.product)
        with pytest.raises(InputError, match='no model is loaded'):
            list(library.pretrained.reconstruct(parameters))
        with pytest.raises(InputError, match='no model to save'):
            library.pretrained.save_model(Path('unused.safetensors'))
    finally:
        library.slot.model = saved


PRETRAIN_KEYS = {
    'PretrainPatterns': 96,
    'PretrainCluster': 4,
    'PretrainBatchSize': 2,
    'PretrainEpochGroups': 8,
    'Layers': 2,
    'Width': 8,
}


@pytest.fixture()
def pretrain_settings(model: Any) -> Iterator[Any]:
    """A tiny pattern budget (the time limit only as a guard), no model loaded; restored after."""
    library = model.processing_core.pinn_library
    settings = library.settings
    saved_model = library.slot.model
    saved = {key: settings.parameter(key).get_value() for key in PRETRAIN_KEYS}
    library.slot.model = None
    for key, value in PRETRAIN_KEYS.items():
        settings.parameter(key).set_value(value)
    settings.pretrain_minutes.set_value(2.0)
    try:
        yield library
    finally:
        settings.pretrain_minutes.set_value(0.0)
        for key, value in saved.items():
            settings.parameter(key).set_value(value)
        library.slot.model = saved_model


def test_reconstruct_pretrains_for_this_probe_with_live_losses(
    pretrain_settings: Any, scan: SimulatedScan
) -> None:
    library = pretrain_settings
    pretrained = library.pretrained
    parameters = prepare_reconstruct_input(scan.diffraction, scan.product)
    goal = pretrained.get_progress_goal()
    outputs = list(pretrained.reconstruct(parameters))
    progress = [o.progress for o in outputs]
    assert progress == sorted(progress) and progress[-1] == goal
    # pretraining epochs (96 patterns in clusters of 4, 8 clusters an epoch: 3 epochs), each
    # with the loss history so far, then the inference product
    pretraining = outputs[:-1]
    assert len(pretraining) == 3
    assert [len(o.product.losses) for o in pretraining] == [1, 2, 3]
    assert all(np.isfinite(v.value) for v in pretraining[-1].product.losses)
    assert pretrained.is_model_loaded()
    metadata = library.slot.model.metadata
    assert metadata['kind'] == 'pretrained'
    assert int(metadata['pretrain_patterns']) == 96
    result = outputs[-1].product.object_.get_array()
    assert result.shape == scan.product.object_.get_array().shape
    assert np.all(np.isfinite(result))
    assert not np.allclose(result, scan.product.object_.get_array())
