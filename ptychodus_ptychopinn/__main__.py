"""``python -m ptychodus_ptychopinn`` (what ``torchrun -m ptychodus_ptychopinn`` runs): the CLI."""

import sys

from .cli import main

sys.exit(main())
