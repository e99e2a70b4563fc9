"""The ``ptychodus-ptychopinn`` command line: outputs, events, exit codes, help, Ctrl-C.

Data: a tiny scan (32 x 32 patterns, 80 positions) from ptychodus's own simulator, written in
ptychodus's layout. Runs are in-process (``cli.main``) except the Ctrl-C test, which needs a
real process and a real SIGINT. Epochs are 1 fit + 2 refine: these tests check plumbing, not
quality.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('ptychodus')

from ptychodus.api.io import (  # noqa: E402
    load_diffraction_data,
    load_product,
    save_training_data,
)
from ptychodus.api.reconstruct import prepare_reconstruct_input  # noqa: E402

from ptychodus_ptychopinn import checkpoint, cli  # noqa: E402
from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan  # noqa: E402

RUN = ['--preset', 'fast', '--epochs', '1', '--refine-epochs', '2', '--num-threads', '1']
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def run_cli(args: Sequence[str]) -> Result:
    """``cli.main`` in-process with stdout/stderr captured (works in module fixtures too)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse: --help, usage errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope='module')
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scan = simulate_scan(pattern_size=32, num_positions=80, photons_per_pattern=1e5, seed=3)
    return save_layout(tmp_path_factory.mktemp('layout'), scan)


@pytest.fixture(scope='module')
def reconstructed(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp('out')
    result = run_cli(
        [
            'reconstruct',
            '--input',
            str(layout),
            '--output',
            str(out / 'sub' / 'rec.h5'),
            '--save-model',
            str(out / 'model.safetensors'),
            '--events',
            'json',
            '--run-dir',
            str(out / 'run'),
            *RUN,
        ]
    )
    assert result.code == 0, result.err
    return out, result


def test_reconstruct_writes_product_and_preview(layout: Path, reconstructed: tuple) -> None:
    out, _ = reconstructed
    product = load_product(out / 'sub' / 'rec.h5')
    initial = load_product(layout / 'product.h5')
    # the object is on the input product's grid, and it changed
    assert product.object_.get_geometry() == initial.object_.get_geometry()
    assert product.object_.get_array().shape == initial.object_.get_array().shape
    assert not np.allclose(product.object_.get_array(), initial.object_.get_array())
    assert np.all(np.isfinite(product.object_.get_array()))
    # the probe keeps the input geometry; losses: 1 fit epoch + 2 refine epochs, positive
    assert product.probes.get_array().shape == initial.probes.get_array().shape
    assert [v.epoch for v in product.losses] == [1, 3, 4]
    assert all(v.value > 0 for v in product.losses)
    assert 'ptychodus-ptychopinn' in product.metadata.comments
    # preview next to the output; model file loadable; no temporary files left behind
    assert (out / 'sub' / 'rec.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert checkpoint.load_model(out / 'model.safetensors').config.model.n == 32
    assert not [p for p in out.rglob('*') if p.name.endswith(('.part', '.check'))]


def test_events_are_json_lines(reconstructed: tuple) -> None:
    _, result = reconstructed
    events = result.events()
    kinds = [e['event'] for e in events]
    assert kinds[0] == 'start' and kinds[-1] == 'result'
    assert kinds.count('epoch') == 3 and 'snapshot' in kinds
    goal = events[0]['goal']
    assert goal == 4
    for event in events:
        if event['event'] == 'epoch':
            assert {'stage', 'epoch', 'progress', 'goal', 'loss', 'seconds'} <= set(event)
            assert event['stage'] in ('fit', 'refine')
            assert isinstance(event['loss'], float) and event['goal'] == goal
    progress = [e['progress'] for e in events if e['event'] in ('epoch', 'snapshot')]
    assert progress == sorted(progress) and progress[-1] == goal
    assert events[-1]['progress'] == goal and events[-1]['output'].endswith('rec.h5')
    ends = [(e['stage'], e['reason'], e['epochs']) for e in events if e['event'] == 'stage_end']
    assert ends == [('fit', 'epochs', 1), ('refine', 'epochs', 2)]


def test_run_dir_holds_the_events_and_the_last_snapshot(reconstructed: tuple) -> None:
    from ptychodus_ptychopinn.rundir import RunDirReader

    out, result = reconstructed
    reader = RunDirReader(out / 'run')
    assert reader.poll() == result.events()  # the same records as --events json
    snapshot = reader.latest_snapshot()
    assert snapshot is not None and snapshot.stage == 'refine' and snapshot.progress == 4
    product = load_product(out / 'sub' / 'rec.h5')
    np.testing.assert_allclose(snapshot.object, product.object_.get_array()[0], atol=1e-6)
    assert reader.status().state == 'result' and reader.status().ended


def test_infer_with_saved_model(layout: Path, reconstructed: tuple, tmp_path: Path) -> None:
    out, _ = reconstructed
    target = tmp_path / 'inferred.h5'
    result = run_cli(
        [
            'infer',
            '--input',
            str(layout),
            '--output',
            str(target),
            '--model',
            str(out / 'model.safetensors'),
            '--no-preview',
            '--num-threads',
            '1',
        ]
    )
    assert result.code == 0, result.err
    product = load_product(target)
    initial = load_product(layout / 'product.h5')
    assert product.object_.get_geometry() == initial.object_.get_geometry()
    assert not np.allclose(product.object_.get_array(), initial.object_.get_array())
    assert product.losses == []  # pure inference: no epochs
    assert not (tmp_path / 'inferred.png').exists()


def test_train_from_exported_data_and_layout(layout: Path, tmp_path: Path) -> None:
    exported = tmp_path / 'exported'
    exported.mkdir()
    parameters = prepare_reconstruct_input(
        load_diffraction_data(layout / 'diffraction.h5'), load_product(layout / 'product.h5')
    )
    save_training_data(exported / 'scan.h5', parameters, inpaint_bad_pixels=False)
    for source in (exported, layout):
        model = tmp_path / f'{source.name}.safetensors'
        result = run_cli(
            ['train', '--input', str(source), '--output', str(model), '--events', 'json']
            + ['--preset', 'fast', '--epochs', '2', '--validation-fraction', '0.2']
            + ['--num-threads', '1']
        )
        assert result.code == 0, result.err
        final = result.events()[-1]
        assert final['event'] == 'result' and len(final['losses']) == 2
        assert isinstance(final['validation_loss'], float)
        assert checkpoint.load_model(model).config.model.gridsize == 2


@pytest.mark.parametrize(
    ('case', 'expected'),
    [
        ('missing_input', ['does not exist', 'diffraction.h5']),
        ('unknown_preset', ['preset', "'fast'", "'standard'"]),
        ('unknown_device', ["'cuda:7'", 'not available', 'devices']),
        ('unwritable_output', ['cannot write the output', 'writable directory']),
        ('bad_set', ['width', 'int']),
        ('missing_layout_file', ['product.h5', 'standard']),
    ],
)
def test_bad_input_exits_2_with_a_helpful_message(
    case: str, expected: list[str], layout: Path, tmp_path: Path
) -> None:
    source, output, extra = str(layout), str(tmp_path / 'o.h5'), []
    if case == 'missing_input':
        source = str(tmp_path / 'nowhere')
    elif case == 'unknown_preset':
        # config is checked before files: the missing input is not what gets reported
        source, extra = str(tmp_path / 'nowhere'), ['--preset', 'turbo']
    elif case == 'unknown_device':
        extra = ['--device', 'cuda:7']
    elif case == 'unwritable_output':
        blocker = tmp_path / 'a_file'
        blocker.write_text('not a directory')
        output = str(blocker / 'o.h5')
    elif case == 'bad_set':
        extra = ['--set', 'width=wide']
    elif case == 'missing_layout_file':
        partial = tmp_path / 'partial'
        partial.mkdir()
        (partial / 'diffraction.h5').write_bytes((layout / 'diffraction.h5').read_bytes())
        source = str(partial)
    result = run_cli(['reconstruct', '--input', source, '--output', output, *RUN, *extra])
    assert result.code == 2, result.err
    message = result.err.strip().splitlines()[-1]
    assert message.startswith('ptychodus-ptychopinn reconstruct: error:')
    for text in expected:
        assert text in message, message
    assert not (tmp_path / 'o.h5').exists()


def test_error_event_and_model_architecture_clash(reconstructed: tuple, layout: Path) -> None:
    out, _ = reconstructed
    result = run_cli(
        [
            'reconstruct',
            '--input',
            str(layout),
            '--output',
            str(out / 'clash.h5'),
            '--model',
            str(out / 'model.safetensors'),
            '--gridsize',
            '1',
            '--events',
            'json',
        ]
    )
    assert result.code == 2
    event = result.events()[-1]
    assert event['event'] == 'error' and event['exit_code'] == 2
    assert 'gridsize=2' in event['message']


def test_devices() -> None:
    result = run_cli(['devices'])
    assert result.code == 0
    assert result.out.startswith('auto -> ') and 'cpu' in result.out
    listing = json.loads(run_cli(['devices', '--json']).out)
    assert listing['auto'] in [d['name'] for d in listing['devices']]
    assert all(d['description'] for d in listing['devices'])


def test_help_documents_every_option() -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and 'reconstruct' in a.choices)
    required = {
        'reconstruct': [
            '--input', '--output', '--preset', '--device', '--epochs', '--model', '--events',
            '--refine-epochs', '--learning-rate', '--gridsize', '--probe-refinement',
            '--no-probe-refinement', '--preview', '--save-model', '--num-threads',
            '--batch-size', '--inference-batch-size', '--seed', '--deterministic',
        ],
        'infer': ['--input', '--output', '--model', '--device', '--num-threads', '--seed'],
        'train': [
            '--input', '--output', '--epochs', '--validation-fraction', '--device', '--run-dir',
        ],
        'pretrain': [
            '--probe', '--output', '--minutes', '--patterns', '--device', '--events', '--model',
            '--set', '--run-dir',
        ],
        'devices': [],
        'frc': ['--png', '--json', '--pixel-size-nm'],
        'split': [],
        'studio': ['--input', '--follow', '--compare', '--preset', '--run', '--screenshot'],
    }  # fmt: skip
    for name, sub in subparsers.choices.items():
        result = run_cli([name, '--help'])
        assert result.code == 0
        text = ' '.join(result.out.split())
        options = [s for a in sub._actions for s in a.option_strings]
        assert set(required[name]) <= set(options), name
        for action in sub._actions:
            assert action.help, f'{name} {action.option_strings} has no help'
            for option in action.option_strings:
                assert option in text, f'{name} --help does not show {option}'


def test_interrupt_before_a_snapshot_writes_nothing(
    layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptychodus_ptychopinn import engine

    def interrupted(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(engine, 'reconstruct', interrupted)
    target = tmp_path / 'o.h5'
    result = run_cli(
        ['reconstruct', '--input', str(layout), '--output', str(target), '--events', 'json']
    )
    assert result.code == 130
    assert result.events()[-1]['event'] == 'interrupted'
    assert list(tmp_path.iterdir()) == []


def test_sigint_writes_the_last_complete_snapshot(layout: Path, tmp_path: Path) -> None:
    """A real Ctrl-C after the first snapshot: exit 130 and a complete, loadable product."""
    target = tmp_path / 'o.h5'
    command = [sys.executable, '-m', 'ptychodus_ptychopinn', 'reconstruct']
    command += ['--input', str(layout), '--output', str(target), '--events', 'json']
    command += ['--preset', 'fast', '--epochs', '500', '--num-threads', '1', '--no-preview']
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'},
        # A test run started in the background (`cmd &` in a script) ignores SIGINT, and its
        # children inherit that; the user's Ctrl-C is what is tested, so take it back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 240
        for line in process.stdout:
            if json.loads(line)['event'] == 'snapshot':
                break
            assert time.monotonic() < deadline, 'no snapshot in time'
        else:
            pytest.fail('the run ended without a snapshot: ' + process.stderr.read())
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert json.loads(rest.splitlines()[-1])['event'] == 'interrupted'
    assert 'last complete snapshot' in err
    product = load_product(target)  # complete: ptychodus loads it
    assert 1 <= len(product.losses) < 500
    assert np.all(np.isfinite(product.object_.get_array()))
    assert [p.name for p in tmp_path.iterdir()] == ['o.h5']


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_lines_otherwise() -> None:
    terminal = _Terminal()
    reporter = cli.Reporter(stdout=io.StringIO(), stderr=terminal)
    reporter.start(4)
    reporter.batch('fit', 0, 2, 1.5)
    reporter.epoch('fit', 0, 1, 1.25, 0.5, 1)
    reporter.message('hello')
    reporter.finish()
    text = terminal.getvalue()
    assert '\r' in text and ' 25%|' in text and 'fit 1.0/4' in text and 'loss 1.25' in text
    assert 'hello\n' in text and text.endswith('\n')

    plain = io.StringIO()
    reporter = cli.Reporter(stdout=io.StringIO(), stderr=plain)
    reporter.start(4)
    reporter.epoch('fit', 0, 1, 1.25, 0.5, 1)
    assert plain.getvalue() == 'fit epoch 1/1 [1/4]: loss 1.25 (0.50 s)\n'


def test_position_refinement_writes_corrected_positions(tmp_path: Path) -> None:
    """Known position errors in the input product: the output's positions (in metres, as
    ptychodus reads them) are closer to the truth, and the result says how far they moved."""
    from dataclasses import replace

    from ptychodus.api.probe_positions import ProbePositionSequence

    scan = simulate_scan(
        pattern_size=32, num_positions=150, object_kind='dead_leaves', phase_range_rad=3.0, seed=21
    )
    pixel = scan.product.object_.get_pixel_geometry()
    error = np.random.default_rng(21).uniform(-1.5, 1.5, (len(scan.product.probe_positions), 2))
    moved = ProbePositionSequence(
        [
            replace(p, x_m=p.x_m + e[0] * pixel.width_m, y_m=p.y_m + e[1] * pixel.height_m)
            for p, e in zip(scan.product.probe_positions, error)
        ]
    )
    directory = save_layout(
        tmp_path / 'wrong', replace(scan, product=replace(scan.product, probe_positions=moved))
    )
    output = tmp_path / 'rec.h5'
    args = ['reconstruct', '--input', str(directory), '--output', str(output), '--events', 'json']
    args += ['--preset', 'fast', '--refine-epochs', '100', '--num-threads', '2']
    result = run_cli([*args, '--set', 'position_refinement=true', '--set', 'refine_time_limit=0'])
    assert result.code == 0, result.err

    def pixels(path: Path) -> np.ndarray:
        product = load_product(path)
        geometry = product.object_.get_geometry()
        x = geometry.map_probe_positions_to_object_x_px(product.probe_positions)
        y = geometry.map_probe_positions_to_object_y_px(product.probe_positions)
        return np.stack([x, y], axis=-1)

    def error_px(estimate: np.ndarray) -> float:
        delta = estimate - scan.positions_px
        return float(np.sqrt(np.mean(np.sum((delta - delta.mean(0)) ** 2, axis=1))))

    given, refined = pixels(directory / 'product.h5'), pixels(output)
    assert error_px(given) > 1.0
    assert error_px(refined) < 0.25 * error_px(given)  # measured: 1.23 -> 0.10 px
    (final,) = [e for e in result.events() if e['event'] == 'result']
    correction = final['position_correction_px']
    assert correction['rms'] == pytest.approx(
        float(np.sqrt(np.mean(np.sum((refined - given) ** 2, axis=1)))), abs=1e-3
    )
    assert 'position refinement moved 150 scan points' in result.err
