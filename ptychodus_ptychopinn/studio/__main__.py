"""``python -m ptychodus_ptychopinn.studio``."""

import sys

from .app import main

sys.exit(main())
