"""Writing files safely: fail before heavy work when a path cannot be written, and replace
files atomically so a reader (or a Ctrl-C) never leaves a truncated file behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def check_writable(path: str | os.PathLike[str], what: str) -> Path:
    """Fail with an :class:`InputError` naming ``what`` when ``path`` cannot be written.

    Creates missing parent directories; leaves nothing else behind.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f'the {what} {target} is a directory; give a file name.')
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = _sibling(target, '.check')
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f'cannot write the {what} {target} ({exc.strerror or exc}); choose a path in a '
            'writable directory.'
        ) from exc
    return target


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of ``target`` that replaces it on success and vanishes otherwise
    (also on Ctrl-C), so readers only ever see a complete file."""
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, '.part')
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _sibling(target: Path, suffix: str) -> Path:
    # A fresh name rather than mkstemp, so the file gets the user's usual permissions.
    return target.with_name(f'.{target.name}.{uuid.uuid4().hex[:12]}{suffix}')
