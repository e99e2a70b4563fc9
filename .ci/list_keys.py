"""Plain ptychodus, in whatever environment runs this, must list the PINN reconstructors.

Exits 1 (saying what it saw) when it does not. CI runs it in the environment the README's
set-up command makes (editable install) and in a fresh one with only the built wheel.
"""

import logging
import sys

from ptychodus.model import ModelCore

if __name__ == '__main__':  # ModelCore starts a subprocess: guard the entry point
    import ptychodus_ptychopinn

    with ModelCore(log_level=logging.WARNING) as model:
        keys = list(model.processing_core.processing_api.available_reconstructors())
    wanted = ['pinn_selfsupervised', 'pinn_pretrained']
    print(f'ptychodus lists {keys} (ptychodus_ptychopinn from {ptychodus_ptychopinn.__file__})')
    missing = [key for key in wanted if key not in keys]
    if missing:
        print(f'missing: {missing}', file=sys.stderr)
        sys.exit(1)
