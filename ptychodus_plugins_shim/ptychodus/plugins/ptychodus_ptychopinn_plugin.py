"""ptychodus plugin shim of ptychodus-ptychopinn: adds the PINN reconstructors.

Installed by the ptychodus-ptychopinn wheel into ``ptychodus/plugins/``; ptychodus imports
it at start-up and calls :func:`register_plugins`. It imports nothing at module level, and
any failure of ours becomes one log line, so ptychodus always starts.
"""

import logging

_LOGGER_NAME = 'ptychodus_ptychopinn'


def register_plugins(registry: object) -> None:
    try:
        from ptychodus_ptychopinn.plugin.discovery import install

        install()
    except Exception as exc:
        logger = logging.getLogger(_LOGGER_NAME)
        logger.error(
            'PINN reconstructors are unavailable (ptychodus continues without them; '
            '--log-level 10 shows why): %s: %s',
            type(exc).__name__,
            exc,
        )
        logger.debug('PINN plugin failed to install', exc_info=True)
