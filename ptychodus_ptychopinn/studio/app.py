"""Entry point: ``ptychodus-ptychopinn studio`` (via :func:`add_arguments`/:func:`run`) and
``python -m ptychodus_ptychopinn.studio`` (:func:`main`).

Scripted use (works with ``QT_QPA_PLATFORM=offscreen``)::

    studio --input DIR --preset fast --run --screenshot OUT.png --exit-when-done

PySide6 is imported inside :func:`run` only, so ``--help`` works without it and a missing
PySide6 gives an installation hint instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cli.options import parse_set
from ..config import KEYS, PRESETS
from ..errors import PinnError

INSTALL_HINT = "pip install 'ptychodus-ptychopinn[studio]'"
EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_STOPPED = 0, 1, 2, 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The studio's options (the CLI's ``studio`` subcommand and :func:`main` share them)."""
    source = parser.add_argument_group('what to open')
    source.add_argument(
        '--input',
        metavar='PATH',
        help='scan directory (diffraction.h5 + product.h5) or a training-data file exported '
        'by ptychodus',
    )
    source.add_argument(
        '--follow', metavar='RUN_DIR', help='watch a run directory written by another process'
    )
    source.add_argument(
        '--compare',
        nargs=2,
        metavar=('A', 'B'),
        help='compare two products (.h5) or finished run directories',
    )
    config = parser.add_argument_group('settings (explicit values beat the preset)')
    config.add_argument('--preset', choices=list(PRESETS), help='fill the settings from a preset')
    config.add_argument('--device', metavar='DEV', help="'auto', 'cpu', 'cuda:N' or 'mps'")
    config.add_argument('--epochs', type=int, metavar='N', help='network-fit epochs')
    config.add_argument('--refine-epochs', type=int, metavar='N', help='refinement epochs')
    config.add_argument(
        '--set',
        action='append',
        metavar='KEY=VALUE',
        help='any other config key, repeatable; keys: ' + ', '.join(KEYS),
    )
    action = parser.add_argument_group('scripted use')
    action.add_argument('--run', action='store_true', help='start a run once the window shows')
    action.add_argument(
        '--action',
        choices=('reconstruct', 'infer', 'train'),
        default='reconstruct',
        help='what --run starts (default reconstruct; infer needs --model)',
    )
    action.add_argument('--model', metavar='FILE', help='model file for --action infer')
    action.add_argument(
        '--run-dir', metavar='DIR', help="also write this window's run as a run directory"
    )
    action.add_argument('--output', metavar='FILE.h5', help='save the product when done')
    action.add_argument('--save-model', metavar='FILE', help='save the model when done')
    action.add_argument(
        '--screenshot', metavar='OUT.png', help='save a picture of the window when done'
    )
    action.add_argument(
        '--exit-when-done',
        action='store_true',
        help='quit when the run, followed run or comparison is done (exit 0 on success)',
    )
    action.add_argument(
        '--stall-seconds',
        type=float,
        default=60.0,
        metavar='S',
        help='follow mode: call a run stalled after S seconds without an event (default 60)',
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='ptychodus-ptychopinn studio',
        description='PINN Studio: run, watch, follow and compare PINN reconstructions in a '
        f'standalone window (PySide6; {INSTALL_HINT}).',
    )
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Open the window as ``args`` say and run the Qt event loop; returns the exit code."""
    try:
        from PySide6.QtWidgets import QApplication

        from .window import StudioWindow
    except ImportError as exc:
        print(
            f'PINN Studio needs PySide6 and pyqtgraph ({exc}); install them with {INSTALL_HINT}',
            file=sys.stderr,
        )
        return EXIT_INPUT
    try:
        extra = parse_set(getattr(args, 'set', None))
    except (ValueError, PinnError) as exc:
        print(f'studio: error: {exc}', file=sys.stderr)
        return EXIT_INPUT
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else 'studio'])
    window = StudioWindow()
    try:
        return _run_window(app, window, args, extra)
    finally:
        dispose(window)


def _run_window(app: Any, window: Any, args: argparse.Namespace, extra: dict[str, Any]) -> int:
    """Set ``window`` up as ``args`` say, start what they ask for and run the event loop."""
    from PySide6.QtCore import QTimer

    settings = window.settings
    if args.preset:
        settings.apply_preset(args.preset)
    if args.device:
        settings.set_device(args.device)
    if args.epochs is not None:
        settings.epochs.setValue(args.epochs)
    if args.refine_epochs is not None:
        settings.refine_epochs.setValue(args.refine_epochs)
    settings.extra.update(extra)
    if args.run_dir:
        window.run_dir = Path(args.run_dir)
    window.show()
    try:
        if args.input:
            window.open_input(args.input)
    except Exception as exc:  # noqa: BLE001 - a bad path is the user's to fix
        print(f'studio: error: {exc}', file=sys.stderr)
        return EXIT_INPUT
    code = [EXIT_OK]

    def finish(result: Any) -> None:
        code[0] = _exit_code(result)
        try:
            if args.output and window.outcome is not None and window.outcome.object is not None:
                window.save_product(args.output)
            if args.save_model and window.outcome is not None and window.outcome.model is not None:
                window.save_model(args.save_model)
            if args.screenshot:
                window.save_png(args.screenshot)
        except Exception as exc:  # noqa: BLE001
            print(f'studio: error while saving: {exc}', file=sys.stderr)
            code[0] = EXIT_FAILED
        if args.exit_when_done:
            app.exit(code[0])

    window.run_finished.connect(finish)
    if args.run:
        if args.input is None:
            print('studio: error: --run needs --input', file=sys.stderr)
            return EXIT_INPUT
        QTimer.singleShot(0, lambda: window.start(args.action, args.model))
    elif args.follow:
        QTimer.singleShot(0, lambda: window.follow(args.follow, args.stall_seconds))
    if args.compare:
        compare = window.show_compare()
        compare.set_paths(*args.compare)

        def compared(result: Any) -> None:
            if args.screenshot and not args.run and not args.follow:
                compare.grab().save(str(args.screenshot))
            if args.exit_when_done and not args.run and not args.follow:
                app.exit(EXIT_OK if result is not None else EXIT_FAILED)

        compare.compared.connect(compared)
        QTimer.singleShot(0, compare.start)
    return int(app.exec())


def dispose(window: Any) -> None:
    """Stop ``window``'s threads, then delete it and its compare window (C++ objects and all)
    now, while Python and the QApplication are whole.

    Left to the interpreter's exit, the window outlives :func:`run`: its signals' connections
    hold lambdas and closures that refer to it, and the warm-up's ``gc.freeze()`` hides it from
    the collector. PySide's exit handler then deletes every object that still has a Python
    wrapper one by one, in no fixed order; when a pyqtgraph item goes before the view that
    holds it, its destructor re-lays out its parent, which calls a Python override during
    finalization and crashes in shiboken (a segmentation fault after a run that succeeded,
    about every other time). Deleting the top-level windows deletes their children
    parent-first, the order Qt expects.
    """
    from PySide6.QtCore import QCoreApplication, QEvent
    from shiboken6 import Shiboken

    if not Shiboken.isValid(window):
        return
    window.shutdown()  # no timeout: deleting a running QThread aborts the process
    compare = window.compare_window
    window.compare_window = None
    for each in (compare, window):
        if each is not None and Shiboken.isValid(each):
            each.close()
            each.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    window.last_worker = None


def _exit_code(result: Any) -> int:
    status = getattr(result, 'status', None) or getattr(result, 'state', None)
    if status in ('finished', 'result'):
        return EXIT_OK
    if status in ('stopped', 'interrupted'):
        return EXIT_STOPPED
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ptychodus_ptychopinn.studio``."""
    return run(build_parser().parse_args(argv))
