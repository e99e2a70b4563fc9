"""Exception types: one for bad user input, one for bad model files, one for cancellation.

Callers (CLI, ptychodus adapter) map these to exit codes and log lines, so every message
says what is wrong and what to do about it.
"""


class PinnError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(PinnError, ValueError):
    """The user's data or configuration cannot be used; the message says how to fix it."""


class ConfigError(InputError):
    """A configuration field has a value outside its allowed set."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f'{field} = {value!r} is not allowed; expected {allowed}.')


class DeviceError(InputError):
    """A device was requested that torch cannot see."""


class ModelFileError(PinnError):
    """A model file is unreadable, corrupt, hostile or incompatible with the data."""
