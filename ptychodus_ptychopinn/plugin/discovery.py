"""How ptychodus finds the PINN library without any user action.

ptychodus hard-codes its reconstructor libraries, but it imports every module of the
namespace package ``ptychodus.plugins`` (calling ``register_plugins(registry)``) inside
``ModelCore.__init__`` *before* it builds ``ProcessingCore``. Our wheel ships such a module,
``ptychodus/plugins/ptychodus_ptychopinn_plugin.py`` (source: ``ptychodus_plugins_shim/``);
it calls :func:`install`, which replaces the module-global ``ProcessingCore`` in
``ptychodus.model.core`` with a subclass that appends our library. Any failure is logged as
one line by the shim and ptychodus starts without us.

The GUI side (a settings panel) must patch ``ptychodus.controller.core``, which imports
PyQt5; :func:`install` therefore only adds a lazy ``sys.meta_path`` hook that runs the
callbacks given to :func:`add_controller_extension` once ptychodus itself imports that
module; it registers :func:`.gui.extend_controller` (our panel, docs/gui.md) that way.
Nothing here imports Qt.

Regular and editable installs alike place that module in ptychodus's folder (the build
backend copies forced files into editable wheels too), so nothing needs a second step.

This module imports only the standard library at import time.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from . import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

SHIM_MODULE = 'ptychodus_ptychopinn_plugin'
CONTROLLER_MODULE = 'ptychodus.controller.core'

_LIBRARIES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_CONTROLLER_EXTENSIONS: list[Callable[[ModuleType], None]] = []


# -- ProcessingCore ------------------------------------------------------------------------


def install() -> None:
    """Add the PINN library to every ``ModelCore`` built from now on (idempotent)."""
    import ptychodus.model.core as core

    from .library import PinnReconstructorLibrary  # heavy (torch); failures surface here

    base = core.ProcessingCore
    if not getattr(base, '_pinn_wrapped', False):
        wrapped = _wrap_processing_core(base, PinnReconstructorLibrary)
        core.ProcessingCore = wrapped  # type: ignore[misc, assignment]
    # The GUI settings panel: Qt-free until ptychodus imports its controller (GUI start).
    from .gui import extend_controller

    add_controller_extension(extend_controller)


def _wrap_processing_core(base: type, library_class: type) -> type:
    class ProcessingCoreWithPINN(base):  # type: ignore[valid-type, misc]
        """ptychodus's ProcessingCore with the PINN library appended."""

        _pinn_wrapped = True

        def __init__(
            self,
            task_manager: Any,
            settings_registry: Any,
            product_api: Any,
            algorithm_libraries: Sequence[Any],
        ) -> None:
            libraries = list(algorithm_libraries)
            library = None
            try:
                library = library_class(settings_registry, _is_developer_mode())
                libraries.append(library)
            except Exception as exc:  # never stop ptychodus from starting
                logger.error('PINN reconstructors are unavailable: %s: %s', type(exc).__name__, exc)
                logger.debug('PINN library construction failed', exc_info=True)
            super().__init__(task_manager, settings_registry, product_api, libraries)
            self.pinn_library = library
            if library is not None:
                _LIBRARIES[self.algorithm_parameter] = library

    ProcessingCoreWithPINN.__qualname__ = base.__qualname__
    return ProcessingCoreWithPINN


def _is_developer_mode() -> bool:
    return logging.getLogger('ptychodus.model.core').getEffectiveLevel() <= logging.DEBUG


def library_for(algorithm_parameter: Any) -> Any | None:
    """Our library inside the ProcessingCore that owns ``algorithm_parameter`` (GUI use)."""
    return _LIBRARIES.get(algorithm_parameter)


# -- GUI controller (lazy, Qt-free until ptychodus imports its controller) -----------------


def add_controller_extension(callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(ptychodus.controller.core)`` once ptychodus imports that module
    (at once if it already did). A failing callback is logged, never raised."""
    if callback in _CONTROLLER_EXTENSIONS:
        return
    _CONTROLLER_EXTENSIONS.append(callback)
    install_controller_hook()
    module = sys.modules.get(CONTROLLER_MODULE)
    if module is not None:
        _run_extensions(module, [callback])


def install_controller_hook() -> None:
    if not any(isinstance(f, _ControllerHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _ControllerHook())


class _ControllerHook(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``ptychodus.controller.core`` to run our extensions after it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != CONTROLLER_MODULE or not _CONTROLLER_EXTENSIONS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return None
        original = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            _run_extensions(module, list(_CONTROLLER_EXTENSIONS))

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _run_extensions(module: ModuleType, callbacks: list[Callable[[ModuleType], None]]) -> None:
    for callback in callbacks:
        try:
            callback(module)
        except Exception as exc:
            logger.error('PINN GUI extension failed: %s: %s', type(exc).__name__, exc)
            logger.debug('PINN GUI extension failed', exc_info=True)
