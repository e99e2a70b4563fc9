"""The ptychodus adapter: the only package here that imports ptychodus.

Importing this package is cheap on purpose (no ptychodus, torch or Qt): the discovery
hook and the developer ``.pth`` import :mod:`.discovery` at start-up. The heavy modules
(:mod:`.library`, :mod:`.convert`, :mod:`.settings`) are imported when used.
"""

LOGGER_NAME = 'ptychodus_ptychopinn'
"""Logger of the PINN library; ptychodus shows its records in the Processing status box."""
