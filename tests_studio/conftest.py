"""PINN Studio tests: PySide6 only, in their own pytest process (never with tests/, whose
ptychodus window tests use PyQt5; the two bindings cannot share a process).

Run: ``QT_QPA_PLATFORM=offscreen python -m pytest -q tests_studio -p no:cacheprovider
-o qt_api=pyside6`` (docs/studio.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# before pytest-qt picks its binding and before anything imports Qt
os.environ['QT_API'] = 'pyside6'
os.environ['PYTEST_QT_API'] = 'pyside6'
os.environ['PYQTGRAPH_QT_LIB'] = 'PySide6'
os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / 'sample_data'
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True, scope='session')
def _never_pyqt5() -> Iterator[None]:
    yield
    assert 'PyQt5' not in sys.modules, 'something imported PyQt5 into the studio tests'


@pytest.fixture(scope='session')
def sample_data() -> Path:
    return SAMPLE_DATA


def pytest_report_header(config: Any) -> str:
    return f'studio tests: QT_API={os.environ["QT_API"]}, qt_api ini={config.getini("qt_api")}'
