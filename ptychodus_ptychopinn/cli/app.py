"""The ``ptychodus-ptychopinn`` command: one parser, one subcommand module per command.

Exit codes: 0 ok, 1 internal error, 2 bad input (the message says what to do), 130 interrupted
(the last complete snapshot is written as the output, atomically, when there is one).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from ..errors import InputError, PinnError
from . import devices, pretrain, reconstruct, studio, train, validate
from .options import EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, PROG
from .reporting import Reporter, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='PtychoPINN reconstructions of ptychodus data, without the GUI. Input '
        "directories use ptychodus's standard layout (diffraction.h5 + product.h5, as "
        '`ptychodus -b` reads them); outputs are ptychodus product files.',
        epilog='Exit codes: 0 ok, 1 internal error, 2 bad input, 130 interrupted.',
    )
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    reconstruct.add_parsers(commands)
    train.add_parser(commands)
    pretrain.add_parser(commands)
    devices.add_parser(commands)
    validate.add_parsers(commands)
    studio.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    reporter = Reporter(
        events_json=getattr(args, 'events', None) == 'json',
        quiet=getattr(args, 'quiet', False),
    )
    restore = setup_logging(reporter, getattr(args, 'verbose', False))
    try:
        if args.command != 'studio' and getattr(args, 'run_dir', None):
            _open_run_dir(reporter, args.run_dir)
        return int(args.handler(args, reporter))
    except KeyboardInterrupt:
        reporter.finish()
        reporter.emit('interrupted', progress=None, output=None)
        reporter.message('interrupted; nothing was written.', always=True)
        return EXIT_INTERRUPTED
    except (PinnError, FloatingPointError) as exc:
        reporter.finish()
        reporter.emit('error', exit_code=EXIT_INPUT, message=str(exc))
        reporter.message(f'{PROG} {args.command}: error: {exc}', always=True)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - the last line of defence, reported as such
        reporter.finish()
        reporter.emit('error', exit_code=EXIT_INTERNAL, message=f'{type(exc).__name__}: {exc}')
        if getattr(args, 'debug', False):
            import traceback

            traceback.print_exc(file=reporter.stderr)
        reporter.message(
            f'{PROG} {args.command}: internal error: {type(exc).__name__}: {exc}'
            + ('' if getattr(args, 'debug', False) else ' (rerun with --debug for details)'),
            always=True,
        )
        return EXIT_INTERNAL
    finally:
        reporter.close()
        restore()


def _open_run_dir(reporter: Reporter, directory: str) -> None:
    try:
        reporter.attach_run_dir(directory)
    except OSError as exc:
        raise InputError(
            f'cannot write the run directory {directory} ({exc.strerror or exc}); choose a '
            'writable directory for --run-dir.'
        ) from exc
