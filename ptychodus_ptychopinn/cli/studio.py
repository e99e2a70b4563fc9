"""``studio``: open PINN Studio, the standalone PySide6 window (the ``studio`` extra).

Its options live with the window (:mod:`..studio.app`); PySide6 is imported only when the
command runs, so ``--help`` works without it.
"""

from __future__ import annotations

import argparse
from typing import Any

from .reporting import Reporter


def add_parser(commands: Any) -> None:
    """Register ``studio`` on the subcommand action ``commands``."""
    from ..studio.app import add_arguments

    parser = commands.add_parser(
        'studio',
        help='open PINN Studio: run, watch, follow and compare runs in a window',
        description='PINN Studio, a standalone window (PySide6, the studio extra): open a scan '
        'or exported training data, run Reconstruct / Infer / Train with live loss curves, '
        'object and probe, follow a run directory written by --run-dir elsewhere, or compare '
        'two products.',
    )
    add_arguments(parser)
    parser.set_defaults(handler=cmd_studio)


def cmd_studio(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..studio.app import run

    return run(args)
