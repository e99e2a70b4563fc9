"""``python -m ptychodus_ptychopinn.cli``: the same command as the console script."""

import sys

from .app import main

sys.exit(main())
