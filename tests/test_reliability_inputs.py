"""Bad inputs through every entry point, and faults: nothing lost, everything explained.

One table (``CASES``) of bad inputs, each run through every entry point that can carry it:

- ``factory``: ``factory.build_payload`` on the engine's arrays;
- ``api``: our reconstructor's ``reconstruct(ReconstructInput)``, as ptychodus's GUI calls it;
- ``cli``: ``ptychodus-ptychopinn reconstruct`` (in-process ``cli.main``) on a layout directory;
- ``batch``: ``ptychodus -b reconstruct`` in a subprocess (a few representative cases only: each
  costs a ptychodus start-up; they run concurrently).

Each must fail before any work with our own error type and a message that names the problem and
what to do (the same words at every entry point), and must leave the input untouched: the arrays
and product it was given (compared before/after) and the files it read (hashed before/after).
The fault tests check that a crash in the middle of training leaves ptychodus usable, and that
reconstruct-and-stop cycles do not leak memory. docs/reliability.md lists every case with the
message a user sees.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import os
import subprocess
import sys
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.assemble import AssembledDiffractionData  # noqa: E402
from ptychodus.api.io import load_product, save_diffraction_data, save_product  # noqa: E402
from ptychodus.api.object import Object  # noqa: E402
from ptychodus.api.probe import ProbeSequence  # noqa: E402
from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence  # noqa: E402
from ptychodus.api.product import Product  # noqa: E402
from ptychodus.api.reconstruct import ReconstructInput  # noqa: E402
from ptychodus.api.settings import SettingsRegistry  # noqa: E402

from ptychodus_ptychopinn import cli, engine  # noqa: E402
from ptychodus_ptychopinn.errors import InputError, PinnError  # noqa: E402
from ptychodus_ptychopinn.factory import build_payload  # noqa: E402
from ptychodus_ptychopinn.plugin.library import PinnReconstructorLibrary  # noqa: E402
from ptychodus_ptychopinn.plugin.settings import ENGINE_KEYS  # noqa: E402
from ptychodus_ptychopinn.plugin.simulation import SimulatedScan, simulate_scan  # noqa: E402

SCAN = simulate_scan(pattern_size=32, num_positions=16, photons_per_pattern=1e4, seed=5)
BASE_SETTINGS = {'preset': 'fast', 'device': 'cpu', 'epochs': 1, 'refine_epochs': 1}
BASE_SETTINGS['num_threads'] = 1  # the test machine's cores are shared
SETTINGS_NAMES = {spec.field: spec.name for spec in ENGINE_KEYS}
SETTINGS_NAMES.update(preset='Preset', device='Device')
ENTRIES = ('factory', 'api', 'cli', 'batch')
OUR_ERRORS = ('InputError', 'ConfigError', 'DeviceError')
# ptychodus's own entry point, as installed: the install put our shim into ptychodus/plugins/.
PTYCHODUS = [sys.executable, '-m', 'ptychodus']


# ------------------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class Inputs:
    """What a user hands over, at ptychodus's level; every entry point is built from it."""

    counts: np.ndarray  # (K, H, W) counts in their source dtype
    bad: np.ndarray  # (H, W), True = bad
    indexes: np.ndarray  # (K,) pattern indexes
    probe: np.ndarray  # (OPR modes, incoherent modes, H, W)
    obj: np.ndarray  # (layers, H, W)
    x_m: np.ndarray  # (P,) positions in metres, P == K unless a case says otherwise
    y_m: np.ndarray
    position_indexes: np.ndarray
    opr_weights: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=lambda: dict(BASE_SETTINGS))

    @classmethod
    def of(cls, scan: SimulatedScan) -> Inputs:
        positions = scan.product.probe_positions
        return cls(
            counts=scan.counts,
            bad=scan.bad_pixels,
            indexes=scan.diffraction.get_indexes(),
            probe=scan.product.probes.get_array(),
            obj=scan.product.object_.get_array(),
            x_m=positions.get_coordinates_x_m(),
            y_m=positions.get_coordinates_y_m(),
            position_indexes=positions.get_indexes(),
        )

    def with_settings(self, **values: Any) -> Inputs:
        return replace(self, settings={**self.settings, **values})

    def first(self, count: int) -> Inputs:
        """The first ``count`` patterns and their positions."""
        return replace(
            self,
            counts=self.counts[:count],
            indexes=self.indexes[:count],
            x_m=self.x_m[:count],
            y_m=self.y_m[:count],
            position_indexes=self.position_indexes[:count],
        )

    # -- what each entry point receives

    def product(self) -> Product:
        base = SCAN.product
        points = [
            ProbePosition(index=int(i), x_m=float(x), y_m=float(y))
            for i, x, y in zip(self.position_indexes, self.x_m, self.y_m)
        ]
        source = base.object_
        return Product(
            metadata=base.metadata,
            probe_positions=ProbePositionSequence(points),
            probes=ProbeSequence(
                array=self.probe,
                opr_weights=self.opr_weights,
                pixel_geometry=base.probes.get_pixel_geometry(),
            ),
            object_=Object(
                array=self.obj,
                pixel_geometry=source.get_pixel_geometry(),
                center=source.get_center(),
                layer_spacing_m=[1e-6] * (self.obj.shape[0] - 1),
            ),
            losses=[],
        )

    def reconstruct_input(self) -> ReconstructInput:
        return ReconstructInput(
            diffraction_patterns=self.counts, bad_pixels=self.bad, product=self.product()
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``build_payload``'s arrays: the first OPR mode, positions in object pixels, and the
        whole layer stack (so the factory's own layer check is what answers)."""
        product = self.product()
        geometry = Object(
            array=self.obj[:1],
            pixel_geometry=product.object_.get_pixel_geometry(),
            center=product.object_.get_center(),
        ).get_geometry()
        positions = product.probe_positions
        x = np.asarray(geometry.map_probe_positions_to_object_x_px(positions), float)
        y = np.asarray(geometry.map_probe_positions_to_object_y_px(positions), float)
        return self.counts, self.bad, self.probe[0], np.stack([x, y], axis=-1), self.obj

    def write_layout(self, directory: Path, *, settings_file: bool = False) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        diffraction = AssembledDiffractionData(
            indexes=np.asarray(self.indexes, dtype=np.intp),
            patterns=self.counts,
            pixel_geometry=SCAN.diffraction.get_pixel_geometry(),
            bad_pixels=self.bad,
        )
        save_diffraction_data(directory / 'diffraction.h5', diffraction)
        save_product(directory / 'product.h5', self.product())
        if settings_file:
            lines = ['[Processing]', 'Algorithm = pinn_selfsupervised', '', '[PINN]']
            lines += [f'{SETTINGS_NAMES[k]} = {v}' for k, v in self.settings.items()]
            (directory / 'settings.ini').write_text('\n'.join(lines) + '\n')
        return directory


BASE = Inputs.of(SCAN)
K, N = BASE.counts.shape[0], BASE.counts.shape[-1]


def _pad(
    array: np.ndarray, size: int, axes: tuple[int, ...] = (-2, -1), value: Any = 0
) -> np.ndarray:
    """Pad the last axes of ``array`` symmetrically to ``size`` with ``value``."""
    widths = [(0, 0)] * array.ndim
    for axis in axes:
        extra = size - array.shape[axis]
        widths[axis] = (extra // 2, extra - extra // 2)
    return np.pad(array, widths, constant_values=value)


def _with_counts(value: float, dtype: type = np.float32) -> Inputs:
    counts: np.ndarray = BASE.counts.astype(dtype)
    counts[2, 5, 6] = value
    return replace(BASE, counts=counts)


def _spread_out() -> Inputs:
    """Positions 15 times further apart (no neighbour within a pattern width) on an object
    grid large enough to hold them."""
    x0, y0 = BASE.x_m.mean(), BASE.y_m.mean()
    return replace(
        BASE,
        x_m=x0 + 15 * (BASE.x_m - x0),
        y_m=y0 + 15 * (BASE.y_m - y0),
        obj=_pad(BASE.obj, 256, value=1),
    )


PIXEL_M = SCAN.product.object_.get_pixel_geometry().width_m


@dataclass(frozen=True)
class Case:
    id: str
    inputs: Callable[[], Inputs]
    expected: tuple[str, ...]
    """Fragments of the message: the problem and the remedy, at every entry point."""
    entries: tuple[str, ...] = ('factory', 'api', 'cli')
    error: type[Exception] = InputError


CASES = (
    Case('empty_scan', lambda: BASE.first(0), ('scan is empty', 'diffraction')),
    Case('single_pattern', lambda: BASE.first(1), ('single diffraction pattern', 'whole scan')),
    Case(
        'non_square_patterns',
        lambda: replace(BASE, counts=_pad(BASE.counts, 40, (-1,)), bad=_pad(BASE.bad, 40, (-1,))),
        ('32 x 40', 'must be square', 'Crop them to 32 x 32', 'Open Dataset'),
    ),
    Case(
        'unsupported_pattern_size',
        lambda: replace(
            BASE, counts=_pad(BASE.counts, 40), bad=_pad(BASE.bad, 40), probe=_pad(BASE.probe, 40)
        ),
        ('40 x 40 patterns are not supported', '32, 64, 128 or 256', 'Crop them to 32 x 32'),
        ('factory', 'api', 'cli', 'batch'),
    ),
    Case(
        'probe_size_differs',
        lambda: replace(BASE, probe=_pad(BASE.probe, 64)),
        ('probe is 64 x 64', 'patterns are 32 x 32', 'build the probe'),
    ),
    Case(
        'all_zero_probe',
        lambda: replace(BASE, probe=np.zeros_like(BASE.probe)),
        ('probe is zero everywhere', 'initialise a probe'),
    ),
    Case(
        'nan_counts',
        lambda: _with_counts(np.nan),
        ('NaN or Inf at 1 good pixel in 1 pattern', 'pattern #2, row 5, column 6', 'Mark those'),
        ('factory', 'api', 'cli', 'batch'),
    ),
    Case('inf_counts', lambda: _with_counts(np.inf), ('NaN or Inf', 'Value Upper Bound')),
    Case(
        'negative_counts',
        lambda: _with_counts(-3, np.int32),
        ('negative counts at 1 good pixel', 'pattern #2', 'Value Lower Bound 0'),
    ),
    Case(
        'every_pixel_bad',
        lambda: replace(BASE, bad=np.ones_like(BASE.bad)),
        ('every detector pixel is marked bad', 'mask'),
    ),
    Case(
        'positions_outside_object',
        lambda: replace(BASE, x_m=BASE.x_m + 1000 * PIXEL_M),
        (f'{K} of {K} scan positions', 'outside the', 'object grid', 'Extra Padding'),
    ),
    Case(
        'duplicate_positions',
        lambda: replace(BASE, x_m=np.full(K, BASE.x_m[0]), y_m=np.full(K, BASE.y_m[0])),
        (f'all {K} scan positions are the same point', 'reload them'),
    ),
    Case(
        'too_few_neighbours_for_gridsize_2',
        lambda: BASE.first(3),
        ('gridsize 2', 'only 3 points', 'Gridsize = 1', '--gridsize 1'),
    ),
    Case(
        'no_neighbour_within_a_pattern',
        _spread_out,
        ('fewer than 3 neighbours within one pattern width', 'Gridsize = 1'),
    ),
    Case(
        'multi_layer_object',
        lambda: replace(BASE, obj=np.concatenate([BASE.obj, BASE.obj])),
        ('2 layers', 'single-layer', 'Number of Layers'),
    ),
    Case(
        # ptychodus pairs patterns and positions by index before any reconstructor sees them,
        # so only hand-built inputs (the API, the factory) can disagree.
        'pattern_position_count_mismatch',
        lambda: replace(
            BASE, x_m=BASE.x_m[:-1], y_m=BASE.y_m[:-1], position_indexes=BASE.position_indexes[:-1]
        ),
        (f'{K} diffraction patterns but {K - 1} scan positions', 'belong to this'),
        ('factory', 'api'),
    ),
    Case(
        'unknown_preset',
        lambda: BASE.with_settings(preset='turbo'),
        ("'turbo' is not allowed", "'fast', 'standard', 'quality'"),
    ),
    Case(
        'unknown_device_name',
        lambda: BASE.with_settings(device='gpu'),
        ("'gpu' is not a device name", 'cuda:N', 'ptychodus-ptychopinn devices'),
    ),
    Case(
        'device_torch_does_not_see',
        lambda: BASE.with_settings(device='cuda:99'),
        ("'cuda:99' is not available", 'choose one of: auto, cpu', '[PINN] Device'),
        ('factory', 'api', 'cli', 'batch'),
    ),
)
ENTRY_CASES = {entry: [c for c in CASES if entry in c.entries] for entry in ENTRIES}


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def _fingerprint(*arrays: Any) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in arrays]


def _product_fingerprint(product: Product) -> list[str]:
    positions = product.probe_positions
    return _fingerprint(
        product.object_.get_array(),
        product.probes.get_array(),
        positions.get_coordinates_x_m(),
        positions.get_coordinates_y_m(),
    )


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def _check_message(message: str, case: Case) -> None:
    for fragment in case.expected:
        assert fragment in message, f'{case.id}: {fragment!r} not in {message!r}'


# --------------------------------------------------------------------------- entry points


@pytest.mark.parametrize('case', ENTRY_CASES['factory'], ids=_ids(ENTRY_CASES['factory']))
def test_factory_rejects(case: Case) -> None:
    inputs = case.inputs()
    counts, bad, probe, positions, obj = inputs.arrays()
    before = _fingerprint(counts, bad, probe, positions, obj)
    settings = dict(inputs.settings)
    preset = settings.pop('preset')
    with pytest.raises(case.error) as caught:
        build_payload(counts, bad, probe, positions, obj, preset=preset, overrides=settings)
    _check_message(str(caught.value), case)
    assert _fingerprint(counts, bad, probe, positions, obj) == before


def _library(settings: dict[str, Any]) -> PinnReconstructorLibrary:
    library = PinnReconstructorLibrary(SettingsRegistry())
    for key, value in settings.items():
        library.settings.parameter(SETTINGS_NAMES[key]).set_value(value)
    return library


@pytest.mark.parametrize('case', ENTRY_CASES['api'], ids=_ids(ENTRY_CASES['api']))
def test_reconstructor_api_rejects(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    inputs = case.inputs()
    parameters = inputs.reconstruct_input()
    before = _fingerprint(parameters.diffraction_patterns, parameters.bad_pixels)
    product_before = _product_fingerprint(parameters.product)
    recon = _library(inputs.settings).self_supervised
    with caplog.at_level(logging.ERROR), pytest.raises(case.error) as caught:
        next(iter(recon.reconstruct(parameters)))
    _check_message(str(caught.value), case)
    # ptychodus shows errors only in its log: the same message must be there
    assert any(str(caught.value) in r.getMessage() for r in caplog.records), caplog.text
    assert _fingerprint(parameters.diffraction_patterns, parameters.bad_pixels) == before
    assert _product_fingerprint(parameters.product) == product_before
    # idle again (what the settings would run), not stuck on the failed run's goal
    idle = _library(inputs.settings).self_supervised.get_progress_goal()
    assert recon.get_progress_goal() == idle


def _run_cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(args)
    return code, err.getvalue()


def _cli_flags(settings: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for key, value in settings.items():
        if key in ('preset', 'device'):
            flags += [f'--{key}', str(value)]
        else:
            flags += ['--set', f'{key}={value}']
    return flags


@pytest.mark.parametrize('case', ENTRY_CASES['cli'], ids=_ids(ENTRY_CASES['cli']))
def test_cli_exits_2(case: Case, tmp_path: Path) -> None:
    inputs = case.inputs()
    layout = inputs.write_layout(tmp_path / 'in')
    hashes = _file_hashes(layout)
    output = tmp_path / 'out' / 'rec.h5'
    args = ['reconstruct', '--input', str(layout), '--output', str(output)]
    code, err = _run_cli(args + _cli_flags(inputs.settings))
    assert code == cli.EXIT_INPUT, err
    message = err.strip().splitlines()[-1]
    assert message.startswith('ptychodus-ptychopinn reconstruct: error: '), err
    _check_message(message, case)
    assert _file_hashes(layout) == hashes
    assert not output.parent.exists() or list(output.parent.iterdir()) == []


def test_cli_unwritable_output(tmp_path: Path) -> None:
    """Checked before any file is read or any work done: output, then model file."""
    layout = BASE.write_layout(tmp_path / 'in')
    hashes = _file_hashes(layout)
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    common = ['reconstruct', '--input', str(layout), *_cli_flags(BASE.settings)]
    for extra in (
        ['--output', str(blocker / 'rec.h5')],
        ['--output', str(tmp_path / 'rec.h5'), '--save-model', str(blocker / 'm.safetensors')],
    ):
        code, err = _run_cli(common + extra)
        assert code == cli.EXIT_INPUT, err
        assert 'cannot write the' in err and 'choose a path in a writable directory' in err, err
    assert _file_hashes(layout) == hashes
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file', 'in']


# ------------------------------------------------------------------------------ batch mode


@dataclass
class BatchRun:
    layout: Path
    hashes: dict[str, str]
    process: subprocess.Popen[str]
    log: str | None = None

    def result(self) -> str:
        if self.log is None:
            out, _ = self.process.communicate(timeout=300)
            self.log = f'exit {self.process.returncode}\n{out}'
        return self.log


@pytest.fixture(scope='module', autouse=True)
def batch_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, BatchRun]]:
    """Start the selected batch cases when the module starts, so their ptychodus start-ups
    (seconds each) overlap with each other and with the in-process tests."""
    selected = {
        item.callspec.params['case'].id  # type: ignore[attr-defined]
        for item in request.session.items
        if getattr(item, 'originalname', '') == 'test_batch_mode_fails_with_our_message'
    }
    runs: dict[str, BatchRun] = {}
    root = tmp_path_factory.mktemp('batch')
    for case in ENTRY_CASES['batch']:
        if case.id not in selected:
            continue
        layout = case.inputs().write_layout(root / case.id / 'in', settings_file=True)
        hashes = _file_hashes(layout)
        command = [*PTYCHODUS, '-b', 'reconstruct', '-i', str(layout)]
        command += ['-o', str(root / case.id / 'out')]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        runs[case.id] = BatchRun(layout, hashes, process)
    yield runs
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


# ---------------------------------------------------------------- accepted, with a warning


def test_opr_modes_warn_and_use_the_first_mode(caplog: pytest.LogCaptureFixture) -> None:
    """Kept behaviour: a probe with OPR modes runs on its first (shared) mode with a warning;
    the output keeps the input's OPR modes and weights (probe refinement is off here)."""
    probe = np.concatenate([BASE.probe, 0.1 * BASE.probe])
    inputs = replace(BASE, probe=probe, opr_weights=np.ones((K, 2)))
    parameters = inputs.reconstruct_input()
    before = _product_fingerprint(parameters.product)
    recon = _library({**inputs.settings, 'refine_epochs': 0}).self_supervised
    with caplog.at_level(logging.WARNING):
        outputs = list(recon.reconstruct(parameters))
    assert 'The probe has 2 OPR modes; PINN uses only the first (shared) mode' in caplog.text
    assert [o.progress for o in outputs] == [1, 2]
    assert outputs[-1].product.probes is parameters.product.probes
    assert _product_fingerprint(parameters.product) == before


def test_repeated_positions_and_nan_on_bad_pixels_are_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Some repeated positions are repeated measurements (warned, not refused); NaN on a pixel
    the mask marks bad is ignored like everything else there."""
    counts = BASE.counts.astype(np.float32)
    bad = BASE.bad.copy()
    bad[7, 9] = True
    counts[:, 7, 9] = np.nan
    x_m, y_m = BASE.x_m.copy(), BASE.y_m.copy()
    x_m[1], y_m[1] = x_m[0], y_m[0]
    inputs = replace(BASE, counts=counts, bad=bad, x_m=x_m, y_m=y_m)
    arrays = inputs.arrays()
    settings = dict(inputs.settings)
    with caplog.at_level(logging.WARNING):
        payload = build_payload(*arrays, preset=settings.pop('preset'), overrides=settings)
    assert '1 of 16 scan positions repeat an earlier position' in caplog.text
    assert np.isfinite(payload.input_scale) and np.isfinite(payload.mean_total_counts)


# ---------------------------------------------------------------------------------- faults


def test_exception_mid_training_leaves_ptychodus_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault at the third optimiser step, inside ptychodus's own task machinery (headless
    ModelCore): the run fails and says so, the network is freed, torch's global state is
    restored, the input product is untouched, and the next run in the same session works."""
    import torch

    from ptychodus_ptychopinn.plugin import discovery

    discovery.install()
    from ptychodus.model import ModelCore

    layout = BASE.write_layout(tmp_path / 'in')
    created: list[weakref.ref[Any]] = []

    class TrackedPinn(engine.context.Pinn):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            created.append(weakref.ref(self))

    loss = engine.context.LOSS_FUNCTIONS['poisson']
    calls = [0]

    def failing_loss(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError('injected fault at batch 3')
        return loss(*args, **kwargs)

    monkeypatch.setattr(engine.context, 'Pinn', TrackedPinn)
    threads = torch.get_num_threads()
    with ModelCore(log_level=logging.WARNING) as core:
        library = core.processing_core.pinn_library  # type: ignore[attr-defined]
        for key, value in {**BASE.settings, 'batch_size': 4}.items():
            library.settings.parameter(SETTINGS_NAMES[key]).set_value(value)
        workflow = core.workflow_api
        diffraction = workflow.load_assembled_diffraction_data(layout / 'diffraction.h5')
        product = workflow.load_product(layout / 'product.h5', diffraction=diffraction)
        before = load_product(layout / 'product.h5')
        monkeypatch.setitem(engine.context.LOSS_FUNCTIONS, 'poisson', failing_loss)
        with pytest.raises(RuntimeError, match='injected fault'):
            product.reconstruct_local(algorithm='pinn_selfsupervised', block=True)
        assert calls[0] == 3
        gc.collect()
        assert len(created) == 1 and created[0]() is None  # the network is gone
        assert torch.get_num_threads() == threads  # NumThreads = 1 was undone
        assert not torch.are_deterministic_algorithms_enabled()
        assert library.self_supervised.get_progress_goal() == 1 + 1 + 1  # idle, not stuck

        monkeypatch.setitem(engine.context.LOSS_FUNCTIONS, 'poisson', loss)
        second = product.reconstruct_local(algorithm='pinn_selfsupervised', block=True)
        result = second.get_reconstruct_input().product  # the output product's final state
        assert len(result.losses) == 1 + 1  # fit + refine epochs
        assert np.all(np.isfinite(result.object_.get_array()))
        assert not np.array_equal(result.object_.get_array(), before.object_.get_array())
        # the product the user started from is unchanged, in the session and on disk
        assert _product_fingerprint(product.get_reconstruct_input().product) == (
            _product_fingerprint(before)
        )
    assert len(created) == 2


def _rss_bytes() -> int:
    with open('/proc/self/statm') as handle:
        return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


@pytest.mark.skipif(not Path('/proc/self/statm').exists(), reason='needs /proc (Linux)')
def test_twenty_reconstruct_and_stop_cycles_keep_rss_flat() -> None:
    """What a GUI session does all day: start a reconstruction, watch two epochs, press Stop.
    RSS is compared after a full collection following cycle 1 and cycle 20 (a full collection
    of this heap takes most of a second, so the cycles in between only sample RSS)."""
    parameters = BASE.reconstruct_input()
    recon = _library({**BASE.settings, 'epochs': 100, 'batch_size': 16}).self_supervised
    levels = []
    for cycle in range(20):
        run = cast(Generator[Any, None, None], recon.reconstruct(parameters))
        assert [next(run).progress, next(run).progress] == [1, 2]
        run.close()
        del run
        if cycle in (0, 19):
            gc.collect()
        levels.append(_rss_bytes())
    drift_mb = (levels[-1] - levels[0]) / 2**20
    peak_mb = (max(levels) - levels[0]) / 2**20
    print(
        f'RSS after cycle 1: {levels[0] / 2**20:.1f} MB; after cycle 20: {drift_mb:+.1f} MB '
        f'(largest in between: {peak_mb:+.1f} MB)'
    )
    assert drift_mb < 50, [round(v / 2**20, 1) for v in levels]
    assert recon.get_progress_goal() == 100 + 1 + 1  # idle: what the settings would run


def test_api_train_and_save_model_refuse_an_unwritable_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Train checks its output before training (not after hours of it); Save Model reports
    an unwritable path as our error, keeping the model loaded."""
    from ptychodus_ptychopinn.config import resolve_config
    from ptychodus_ptychopinn.model.generators import build_generator

    layout = BASE.write_layout(tmp_path / 'in')
    hashes = _file_hashes(layout)
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    library = _library({**BASE.settings, 'epochs': 50})
    recon = library.pretrained
    with caplog.at_level(logging.ERROR), pytest.raises(InputError) as caught:
        next(iter(recon.train(layout, blocker / 'models')))
    assert 'cannot write the model file' in str(caught.value)
    assert 'choose a path in a writable directory' in str(caught.value)
    assert 'Training failed: cannot write the model file' in caplog.text
    assert not recon.is_model_loaded()

    config = resolve_config('fast', n=N).pinn
    state = build_generator(config.model).state_dict()
    library.slot.model = engine.TrainedModel(config, state, input_scale=1.0, intensity_scale=1.0)
    with pytest.raises(PinnError, match='cannot save the model to .* writable directory'):
        recon.save_model(blocker / 'm.safetensors')
    assert recon.is_model_loaded()
    assert _file_hashes(layout) == hashes
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file', 'in']


# ------------------------------------------------- batch mode (started with the module)


@pytest.mark.parametrize('case', ENTRY_CASES['batch'], ids=_ids(ENTRY_CASES['batch']))
def test_batch_mode_fails_with_our_message(case: Case, batch_runs: dict[str, BatchRun]) -> None:
    run = batch_runs[case.id]
    layout, hashes, log = run.layout, run.hashes, run.result()
    assert log.startswith('exit 1\n'), log[-3000:]  # ptychodus's ExitCode.FAILURE
    failed = [line for line in log.splitlines() if 'Reconstruction failed:' in line]
    assert failed, log[-3000:]
    _check_message(failed[-1], case)
    assert any(f'Reconstruction failed: {name}: ' in failed[-1] for name in OUR_ERRORS)
    assert _file_hashes(layout) == hashes
    assert not list((layout.parent / 'out').glob('product*.h5'))
