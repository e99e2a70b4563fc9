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

Editable installs do not put files into ptychodus's folder. For them::

    python -m ptychodus_ptychopinn.plugin.discovery --install-dev    # once per environment
    python -m ptychodus_ptychopinn.plugin.discovery --uninstall-dev

writes (removes) ``ptychodus_ptychopinn_dev.pth`` in site-packages. At interpreter start it
adds a tiny import hook (no import of this package) that appends the checkout's
``ptychodus_plugins_shim/ptychodus`` to ``ptychodus.__path__`` when ``ptychodus.plugins``
is first imported, so ptychodus loads the same shim module from the checkout.

This module imports only the standard library at import time.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import logging
import sys
import sysconfig
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

SHIM_MODULE = 'ptychodus_ptychopinn_plugin'
DEV_PTH_NAME = 'ptychodus_ptychopinn_dev.pth'
CONTROLLER_MODULE = 'ptychodus.controller.core'

_LIBRARIES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_CONTROLLER_EXTENSIONS: list[Callable[[ModuleType], None]] = []

# Executed by the dev .pth at interpreter start (and by activate_dev_overlay). It must not
# import this package: if our package is broken, the shim still loads and reports it.
_OVERLAY_CODE = """
import sys
class _PinnDevOverlay:
    directory = {directory!r}
    def find_spec(self, fullname, path=None, target=None):
        if fullname == 'ptychodus.plugins':
            paths = getattr(sys.modules.get('ptychodus'), '__path__', None)
            if paths is not None and self.directory not in paths:
                paths.append(self.directory)
        return None
    @classmethod
    def activate(cls):
        paths = getattr(sys.modules.get('ptychodus'), '__path__', None)
        if paths is not None and cls.directory not in paths:
            paths.append(cls.directory)
        if not any(type(f).__name__ == '_PinnDevOverlay' for f in sys.meta_path):
            sys.meta_path.insert(0, cls())
_PinnDevOverlay.activate()
"""


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


# -- developer (editable) installs ---------------------------------------------------------


def shim_directory() -> Path:
    """``<checkout>/ptychodus_plugins_shim/ptychodus``: what the dev overlay adds."""
    return Path(__file__).resolve().parents[2] / 'ptychodus_plugins_shim' / 'ptychodus'


def overlay_code(directory: Path | None = None) -> str:
    return _OVERLAY_CODE.format(directory=str(directory or shim_directory()))


def activate_dev_overlay(directory: Path | None = None) -> None:
    """Make ptychodus load the shim from the checkout in this process (tests, scripts)."""
    exec(overlay_code(directory), {'__name__': '_pinn_dev_overlay'})


def install_dev(site_dir: Path | None = None) -> Path:
    """Write the dev ``.pth`` into ``site_dir`` (default: this environment's site-packages)."""
    directory = shim_directory()
    if not (directory / 'plugins' / f'{SHIM_MODULE}.py').is_file():
        raise SystemExit(
            f'{directory} does not hold the plugin shim: this is not a source checkout. '
            'An installed wheel already ships ptychodus/plugins/'
            f'{SHIM_MODULE}.py; nothing to do.'
        )
    target = Path(site_dir or sysconfig.get_paths()['purelib']) / DEV_PTH_NAME
    code = overlay_code(directory)
    line = f"import sys; exec({code!r}, {{'__name__': '_pinn_dev_overlay'}})\n"
    target.write_text(line)
    return target


def uninstall_dev(site_dir: Path | None = None) -> Path | None:
    target = Path(site_dir or sysconfig.get_paths()['purelib']) / DEV_PTH_NAME
    if target.exists():
        target.unlink()
        return target
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m ptychodus_ptychopinn.plugin.discovery',
        description='Make ptychodus discover the PINN reconstructors from a source checkout.',
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--install-dev', action='store_true', help='write the dev .pth hook')
    group.add_argument('--uninstall-dev', action='store_true', help='remove the dev .pth hook')
    parser.add_argument('--site-dir', type=Path, help='site-packages to use (default: this one)')
    args = parser.parse_args(argv)
    if args.install_dev:
        print(f'wrote {install_dev(args.site_dir)}')
    else:
        removed = uninstall_dev(args.site_dir)
        print(f'removed {removed}' if removed else 'no dev hook installed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
