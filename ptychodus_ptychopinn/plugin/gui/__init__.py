"""The PINN settings panel inside ptychodus's (PyQt5) main window.

Importing this package imports no Qt (and nothing heavy): :func:`extend_controller` is
registered by :func:`ptychodus_ptychopinn.plugin.discovery.install` as a controller
extension, so it runs only when ptychodus itself imports ``ptychodus.controller.core``,
i.e. when its GUI starts. Only then is the Qt module :mod:`.panel` imported. Headless and
batch use never get here. See docs/gui.md.
"""

from __future__ import annotations

from types import ModuleType


def extend_controller(module: ModuleType) -> None:
    """Make ``module.ProcessingController`` (``ptychodus.controller.core``) show our panel."""
    from .panel import extend_controller as extend

    extend(module)
