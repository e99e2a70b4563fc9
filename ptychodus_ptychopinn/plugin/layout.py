"""ptychodus files on disk <-> engine arrays, for headless use (the CLI).

The CLI must not import ptychodus, so everything it reads or writes in ptychodus's formats
goes through here: a *layout directory* (``diffraction.h5`` + ``product.h5``, what
``ptychodus -b`` reads) becomes a ``ReconstructInput`` exactly as ptychodus would build it
(``prepare_reconstruct_input``), and is converted with the same :mod:`.convert` functions the
GUI reconstructors use, so the CLI and ptychodus see the same arrays. Outputs are written
atomically (temporary name, then rename): an interrupted run never leaves a truncated file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from ptychodus.api.io import (
    StandardFileLayout,
    load_diffraction_data,
    load_product,
    save_product,
)
from ptychodus.api.product import Product
from ptychodus.api.reconstruct import ReconstructInput, prepare_reconstruct_input

from ..errors import InputError
from ..factory import Payload
from ..files import atomic_path
from .convert import (
    LossScale,
    ProductBuilder,
    ScanArrays,
    is_training_file,
    load_training_file,
    scan_arrays,
)

DIFFRACTION_FILE = StandardFileLayout.DIFFRACTION.value
PRODUCT_FILE = StandardFileLayout.PRODUCT.value


@dataclass(frozen=True)
class LayoutScan:
    """A scan read from a layout directory: ptychodus's input plus the engine's arrays."""

    source: Path
    parameters: ReconstructInput
    arrays: ScanArrays


def check_layout(directory: str | os.PathLike[str]) -> Path:
    """Fail early (before any heavy work) when ``directory`` is not a layout directory."""
    path = Path(directory)
    hint = (
        f"pass a directory holding {DIFFRACTION_FILE} and {PRODUCT_FILE} (ptychodus's standard "
        'layout, e.g. the bundled sample_data/)'
    )
    if not path.exists():
        raise InputError(f'the input directory {path} does not exist; {hint}.')
    if not path.is_dir():
        raise InputError(f'the input {path} is not a directory; {hint}.')
    missing = [name for name in (DIFFRACTION_FILE, PRODUCT_FILE) if not (path / name).is_file()]
    if missing:
        raise InputError(f'{path} has no {" and no ".join(missing)}; {hint}.')
    return path


def load_layout(directory: str | os.PathLike[str]) -> LayoutScan:
    """Read ``diffraction.h5`` and ``product.h5`` and pair patterns with positions the way
    ptychodus does before it calls a reconstructor."""
    path = check_layout(directory)
    diffraction_path = path / DIFFRACTION_FILE
    product_path = path / PRODUCT_FILE
    try:
        diffraction = load_diffraction_data(diffraction_path)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(
            f'cannot read {diffraction_path} as ptychodus diffraction data ({exc}); save it '
            'from ptychodus (File > Save Diffraction Data) or regenerate it.'
        ) from exc
    if len(diffraction.get_indexes()) == 0:
        raise InputError(
            f'the scan is empty: {diffraction_path} holds no diffraction patterns. Save the '
            "scan's diffraction data from ptychodus again (or point --input at the right scan)."
        )
    try:
        product = load_product(product_path)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(
            f'cannot read {product_path} as a ptychodus product ({exc}); save the product from '
            'ptychodus (Products > Save) with a probe, an object and positions.'
        ) from exc
    try:
        parameters = prepare_reconstruct_input(diffraction, product)
    except ValueError as exc:
        raise InputError(
            f'the patterns in {diffraction_path} do not match the positions in {product_path} '
            f'({exc}); use a product made for this diffraction data.'
        ) from exc
    return LayoutScan(source=path, parameters=parameters, arrays=scan_arrays(parameters))


def training_arrays(path: str | os.PathLike[str]) -> tuple[Path, ScanArrays]:
    """Training input: a file written by ``save_training_data`` (Export Training Data), a
    directory holding exactly one such file, or a layout directory."""
    source = Path(path)
    hint = (
        'pass a training-data file exported by ptychodus (Export Training Data on '
        f'pinn_pretrained), a directory holding one, or a directory with {DIFFRACTION_FILE} '
        f'and {PRODUCT_FILE}'
    )
    if source.is_file():
        if not is_training_file(source):
            raise InputError(f'{source} is not ptychodus training data; {hint}.')
        return source, load_training_file(source)
    if not source.is_dir():
        raise InputError(f'the training input {source} does not exist; {hint}.')
    layout = {DIFFRACTION_FILE, PRODUCT_FILE}
    candidates = sorted(
        p
        for pattern in ('*.h5', '*.hdf5')
        for p in source.glob(pattern)
        if p.name not in layout and is_training_file(p)
    )
    if len(candidates) == 1:
        return candidates[0], load_training_file(candidates[0])
    if len(candidates) > 1:
        names = ', '.join(p.name for p in candidates[:5])
        raise InputError(
            f'{source} holds {len(candidates)} training-data files ({names}); training uses '
            'one scan: pass the file itself.'
        )
    if (source / DIFFRACTION_FILE).is_file() and (source / PRODUCT_FILE).is_file():
        return source, load_layout(source).arrays
    raise InputError(f'{source} holds no training data; {hint}.')


class ProductWriter:
    """Engine results -> ptychodus product files on the input product's grid.

    Losses go through :class:`.convert.LossScale` (positive values, as ptychodus plots them),
    so a product written here matches what the GUI reconstructor would yield.
    """

    def __init__(self, parameters: ReconstructInput, payload: Payload, fit_epochs: int) -> None:
        self.builder = ProductBuilder(parameters.product)
        self.scale = LossScale(payload, fit_epochs)

    def losses(self, history: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
        """The loss history as written to the product (positive, log-plottable)."""
        return [(value.epoch, value.value) for value in self.scale.losses(history)]

    def loss_value(self, progress: int, loss: float) -> float:
        """One engine loss as written to the product (see :class:`.convert.LossScale`)."""
        return self.scale.value(progress, loss)

    def product(
        self,
        object_array: np.ndarray,
        probe_modes: np.ndarray | None,
        history: Iterable[tuple[int, float]],
        note: str = '',
        positions_px: np.ndarray | None = None,
    ) -> Product:
        """``probe_modes`` None keeps the input probe, ``positions_px`` None the positions;
        ``note`` is appended to the comments."""
        losses = self.scale.losses(history)
        product = self.builder.build(object_array, probe_modes, losses, positions_px)
        if note:
            comments = product.metadata.comments
            text = f'{comments}\n{note}' if comments else note
            product = replace(product, metadata=replace(product.metadata, comments=text))
        return product

    def write(
        self,
        path: str | os.PathLike[str],
        object_array: np.ndarray,
        probe_modes: np.ndarray | None,
        history: Iterable[tuple[int, float]],
        note: str = '',
        positions_px: np.ndarray | None = None,
    ) -> Path:
        """Write a product file atomically; returns its path."""
        target = Path(path)
        product = self.product(object_array, probe_modes, history, note, positions_px)
        with atomic_path(target) as tmp:
            save_product(tmp, product)
        return target


def read_product_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The object (layer 0), probe modes and losses of a product file (for checks and tools)."""
    product = load_product(Path(path))
    losses = np.array([(v.epoch, v.value) for v in product.losses], dtype=float).reshape(-1, 2)
    return {
        'object': product.object_.get_layer(0),
        'probe': product.probes.get_probe_no_opr().get_array(),
        'losses': losses,
    }
