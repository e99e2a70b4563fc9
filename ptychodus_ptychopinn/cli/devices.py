"""``devices``: what ``--device auto`` would choose, and every device torch sees."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .options import EXIT_OK
from .reporting import Reporter


def add_parser(commands: Any) -> None:
    """Register ``devices`` on the subcommand action ``commands``."""
    dev = commands.add_parser(
        'devices',
        help='list the devices torch sees and what auto would choose',
        description='Print what --device auto would choose and every device torch sees.',
    )
    dev.add_argument('--json', action='store_true', help='print one JSON object instead')
    dev.set_defaults(handler=cmd_devices)


def cmd_devices(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..device import auto_device, available_devices, describe_device

    auto = auto_device()
    devices = [{'name': d, 'description': describe_device(d)} for d in available_devices()]
    if args.json:
        reporter.stdout.write(json.dumps({'auto': auto, 'devices': devices}) + '\n')
    else:
        reporter.stdout.write(f'auto -> {auto}\n')
        for device in devices:
            reporter.stdout.write(f'  {device["description"]}\n')
    reporter.stdout.flush()
    return EXIT_OK
