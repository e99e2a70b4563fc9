"""PINN Studio: a standalone PySide6 window for PINN runs (``ptychodus-ptychopinn studio``).

PySide6 only, never PyQt5: ptychodus's own window is PyQt5 and the two bindings cannot share a
process (docs/studio.md). Nothing outside this package imports it, and importing the package
itself imports no Qt: :mod:`.app` imports PySide6 inside ``run`` so ``--help`` works without it.
"""

from __future__ import annotations

import os

# pyqtgraph picks a binding on import; make it the one this window is written for.
os.environ['PYQTGRAPH_QT_LIB'] = 'PySide6'
