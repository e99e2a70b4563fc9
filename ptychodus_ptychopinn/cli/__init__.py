"""Headless entry points: ``ptychodus-ptychopinn`` and ``python -m ptychodus_ptychopinn``.

Modules: ``app`` (parser and main), ``options`` (shared options and pre-flight checks),
``reporting`` (JSON events, progress bar, messages), and one module per command.
"""

from .app import build_parser, main
from .options import EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, PROG
from .reporting import Reporter

__all__ = [
    'EXIT_INPUT',
    'EXIT_INTERNAL',
    'EXIT_INTERRUPTED',
    'EXIT_OK',
    'PROG',
    'Reporter',
    'build_parser',
    'main',
]
