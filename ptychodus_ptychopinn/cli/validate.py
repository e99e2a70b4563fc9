"""``frc`` and ``split``: how users check a real reconstruction without ground truth.

``split`` writes the odd and even halves of a scan as two layout directories; reconstruct
each, then ``frc`` compares the two products (registered, ambiguities removed, over the region
both illuminated) and reports the area under the FRC curve and the half-bit and 1/7
resolutions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import check_writable
from .options import EXIT_OK
from .reporting import Reporter

FRC_KEYS = ('frc_auc', 'frc_half_bit_nm', 'frc_one_seventh_nm')


def add_parsers(commands: Any) -> None:
    """Register ``frc`` and ``split`` on the subcommand action ``commands``."""
    frc = commands.add_parser(
        'frc',
        help='Fourier ring correlation between two reconstructions (e.g. odd/even halves)',
        description='Fourier ring correlation between the objects of two ptychodus product '
        'files on one object grid, after sub-pixel registration and removing what '
        'ptychography cannot measure (global phase, amplitude scale, phase ramp), over the '
        'region both illuminated. Prints the area under the curve and the half-bit and 1/7 '
        'resolutions.',
    )
    frc.add_argument('first', metavar='A.h5', help='first product file')
    frc.add_argument('second', metavar='B.h5', help='second product file (same object grid)')
    frc.add_argument('--png', metavar='FILE.png', help='also plot the curve to this file')
    frc.add_argument(
        '--pixel-size-nm',
        type=float,
        metavar='NM',
        help="object pixel size in nm (default: the first product's)",
    )
    frc.add_argument('--json', action='store_true', help='print one JSON object instead')
    frc.set_defaults(handler=cmd_frc)

    split = commands.add_parser(
        'split',
        help='write the odd and even halves of a scan as two layout directories',
        description='Split a layout directory (diffraction.h5 + product.h5) into its odd and '
        'even scan points, each written as a layout directory with the same probe, object and '
        'geometry, so their reconstructions can be compared with the frc command.',
    )
    split.add_argument('input', metavar='DIR', help='layout directory to split')
    split.add_argument('odd', metavar='ODD_DIR', help='new directory for points 1, 3, 5, ...')
    split.add_argument('even', metavar='EVEN_DIR', help='new directory for points 0, 2, 4, ...')
    split.set_defaults(handler=cmd_split)


def cmd_frc(args: argparse.Namespace, reporter: Reporter) -> int:
    for name in (args.first, args.second):
        if not Path(name).is_file():
            raise InputError(f'{name} is not a file; pass two ptychodus product files (.h5).')
    if args.pixel_size_nm is not None and not args.pixel_size_nm > 0:
        raise InputError(f'--pixel-size-nm {args.pixel_size_nm} must be positive, e.g. 10.')
    png = check_writable(Path(args.png), 'plot') if args.png else None
    from ..plugin.frc import frc_products, plot_frc

    try:
        result = frc_products(args.first, args.second, pixel_size_nm=args.pixel_size_nm)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if png is not None:
        plot_frc(result, png, title=f'{Path(args.first).name} vs {Path(args.second).name}')
    summary = {key: result[key] for key in FRC_KEYS}
    if args.json:
        reporter.stdout.write(json.dumps(summary) + '\n')
    else:
        for key, value in summary.items():
            text = 'never below the threshold' if value is None else f'{value:.4g}'
            reporter.stdout.write(f'{key:20s} {text}\n')
    reporter.stdout.flush()
    return EXIT_OK


def cmd_split(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..plugin.split import split_layout

    odd, even = split_layout(args.input, args.odd, args.even)
    reporter.message(f'wrote the odd half to {odd} and the even half to {even}')
    return EXIT_OK
