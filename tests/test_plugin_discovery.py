"""Discovery: wheels (regular and editable) ship the shim, this environment lists the PINN
reconstructors, and a broken PINN never stops ptychodus from starting (subprocesses, so each
test sees a fresh interpreter)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip('ptychodus')

from ptychodus_ptychopinn.plugin import discovery  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / 'ptychodus_plugins_shim' / 'ptychodus' / 'plugins' / 'ptychodus_ptychopinn_plugin.py'
UNAVAILABLE = 'PINN reconstructors are unavailable'

LIST_KEYS = """
import logging, sys
from ptychodus.model import ModelCore
with ModelCore(log_level=logging.INFO) as model:
    keys = list(model.processing_core.processing_api.available_reconstructors())
print('KEYS', keys)
print('QT', sorted(m for m in sys.modules if m.startswith(('PyQt', 'PySide', 'qtpy'))))
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **env},
        cwd=ROOT,
    )


def _build(tmp_path: Path, kind: str) -> Path:
    """Build a wheel of ``kind`` ('standard' or 'editable') with hatchling, as pip would."""
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path / kind
    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(out), versions=[kind])
    return Path(wheel)


@pytest.mark.parametrize('kind', ['standard', 'editable'])
def test_wheel_ships_the_shim(tmp_path: Path, kind: str) -> None:
    pytest.importorskip('hatchling')
    with zipfile.ZipFile(_build(tmp_path, kind)) as archive:
        names = archive.namelist()
        shipped = archive.read('ptychodus/plugins/ptychodus_ptychopinn_plugin.py')
    assert shipped == SHIM.read_bytes()
    if kind == 'standard':
        assert 'ptychodus_ptychopinn/plugin/discovery.py' in names
    # only our module goes into ptychodus's folder: no __init__.py, nothing else
    assert [n for n in names if n.startswith('ptychodus/')] == [
        'ptychodus/plugins/ptychodus_ptychopinn_plugin.py'
    ]


def test_this_environment_lists_pinn_without_qt() -> None:
    """The README's install (editable) is discovered by plain ptychodus, with no extra step."""
    import ptychodus

    installed = Path(ptychodus.__file__).parent / 'plugins' / SHIM.name
    assert installed.is_file(), f'{installed} is missing: reinstall with pip install -e .'
    assert installed.read_bytes() == SHIM.read_bytes(), 'stale shim: rerun pip install -e .'
    done = _python(LIST_KEYS)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'pinn_selfsupervised', 'pinn_pretrained'" in done.stdout
    assert 'QT []' in done.stdout  # headless use never imports Qt


@pytest.mark.parametrize(
    ('breakage', 'reason'),
    [
        (
            'import ptychodus_ptychopinn.plugin.discovery as d\n'
            'def boom():\n    raise RuntimeError("boom")\n'
            'd.install = boom\n',
            'RuntimeError: boom',
        ),
        (
            'class NoTorch:  # as if torch were not installed\n'
            '    def find_spec(self, name, path=None, target=None):\n'
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            'sys.meta_path.insert(0, NoTorch())\n',
            "ModuleNotFoundError: No module named 'torch'",
        ),
    ],
    ids=['install-raises', 'torch-missing'],
)
def test_broken_pinn_never_stops_ptychodus(breakage: str, reason: str) -> None:
    code = 'import sys\n' + breakage + LIST_KEYS
    done = _python(code)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:]
    assert 'KEYS' in done.stdout and 'pinn_' not in done.stdout.split('KEYS')[1]
    lines = [line for line in output.splitlines() if 'ptychodus_ptychopinn' in line]
    assert len(lines) == 1, output[-2000:]
    assert UNAVAILABLE in lines[0] and reason in lines[0] and '[ERROR]' in lines[0]
    assert 'Traceback' not in output


def test_install_is_idempotent() -> None:
    import ptychodus.model.core as core

    discovery.install()
    discovery.install()
    wrapped = [c for c in core.ProcessingCore.__mro__ if '_pinn_wrapped' in vars(c)]
    assert len(wrapped) == 1
    hooks = [f for f in sys.meta_path if type(f).__name__ == '_ControllerHook']
    assert len(hooks) == 1


def test_controller_hook_runs_extensions_lazily() -> None:
    pytest.importorskip('PyQt5.QtWidgets')
    code = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from ptychodus_ptychopinn.plugin import discovery
seen = []
discovery.add_controller_extension(lambda module: seen.append(module.__name__))
def broken(module):
    raise ValueError('bad panel')
discovery.add_controller_extension(broken)
assert 'ptychodus.controller.core' not in sys.modules and 'PyQt5' not in sys.modules
import ptychodus.controller.core as cc
print('SEEN', seen, hasattr(cc, 'ProcessingController'))
"""
    done = _python(code, QT_QPA_PLATFORM='offscreen')
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SEEN ['ptychodus.controller.core'] True" in done.stdout
    assert done.stdout.count('PINN GUI extension failed: ValueError: bad panel') == 1


def test_shim_logs_through_our_logger(caplog: pytest.LogCaptureFixture) -> None:
    """The shim itself (as ptychodus imports it) turns any exception into one ERROR."""
    import importlib.util

    spec = importlib.util.spec_from_file_location('pinn_shim_under_test', SHIM)
    assert spec is not None and spec.loader is not None
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    original = discovery.install
    discovery.install = lambda: (_ for _ in ()).throw(OSError('disk on fire'))  # type: ignore
    try:
        with caplog.at_level(logging.INFO, logger='ptychodus_ptychopinn'):
            shim.register_plugins(object())
    finally:
        discovery.install = original  # type: ignore[assignment]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and 'OSError: disk on fire' in errors[0].getMessage()
