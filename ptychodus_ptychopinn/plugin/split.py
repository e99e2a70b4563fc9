"""Split a scan into odd and even halves for an FRC resolution estimate.

Real data has no ground truth. The standard estimate is to reconstruct two independent halves
of the scan and compare them with a Fourier ring correlation (:mod:`.frc`): what agrees between
them is signal, what does not is noise. Taking every other scan point (in scan order) gives two
halves that cover the same field of view with the same geometry, each with half the overlap.

Each half is written as a ptychodus layout directory (``diffraction.h5`` + ``product.h5``,
what ``ptychodus -b reconstruct`` and our CLI read) with the source's probe, object, metadata
and detector geometry, so both halves start from the same product and their reconstructions
share one object grid (needed by :func:`.frc.frc_products`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from ptychodus.api.assemble import AssembledDiffractionData
from ptychodus.api.io import (
    StandardFileLayout,
    load_diffraction_data,
    load_product,
    save_diffraction_data,
    save_product,
)
from ptychodus.api.product import Product

from ..errors import InputError
from ..files import atomic_path
from .layout import DIFFRACTION_FILE, PRODUCT_FILE, check_layout

SETTINGS_FILE = StandardFileLayout.SETTINGS.value


def split_layout(
    source: str | os.PathLike[str],
    odd: str | os.PathLike[str],
    even: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """Write the odd (scan points 1, 3, 5, ...) and even (0, 2, 4, ...) halves of the layout
    directory ``source`` to the directories ``odd`` and ``even``; returns ``(odd, even)``.

    Points are counted in the product's scan order (the order of its probe positions), not by
    diffraction index, so the halves interleave along the scan path. Patterns without a
    position are dropped, as ptychodus does when it pairs them. ``settings.ini`` is copied when
    present, so ``ptychodus -b`` runs each half with the same settings.

    Refuses (InputError, before writing anything) when an output directory exists and is not
    empty, or when two of the three directories are the same.
    """
    source_path = check_layout(source)
    odd_path, even_path = Path(odd), Path(even)
    resolved = [p.resolve() for p in (source_path, odd_path, even_path)]
    if len(set(resolved)) != 3:
        raise InputError(
            f'the source ({source_path}) and the odd ({odd_path}) and even ({even_path}) '
            'outputs must be three different directories.'
        )
    for path in (odd_path, even_path):
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InputError(
                f'{path} already exists and is not an empty directory; refusing to overwrite '
                'it. Choose a new output directory or remove it first.'
            )

    diffraction = load_diffraction_data(source_path / DIFFRACTION_FILE)
    product = load_product(source_path / PRODUCT_FILE)
    positions = product.probe_positions
    if len(positions) < 2:
        raise InputError(
            f'{source_path / PRODUCT_FILE} has {len(positions)} scan point(s); splitting needs '
            'at least two.'
        )
    for path, start in ((odd_path, 1), (even_path, 0)):
        half = replace(product, probe_positions=positions[start::2], losses=[])
        _write_half(source_path, path, half, _select_patterns(diffraction, half))
    return odd_path, even_path


def _select_patterns(
    diffraction: AssembledDiffractionData, half: Product
) -> AssembledDiffractionData:
    """The patterns whose indexes are those of the half's scan points, in scan order."""
    indexes = np.asarray(diffraction.get_indexes())
    wanted = np.array([point.index for point in half.probe_positions], dtype=np.intp)
    row_of = {int(index): row for row, index in enumerate(indexes)}
    missing = [int(i) for i in wanted if int(i) not in row_of]
    if missing:
        raise InputError(
            f'{len(missing)} scan point(s) have no diffraction pattern (first index '
            f'{missing[0]}); the product does not belong to this diffraction data.'
        )
    rows = np.array([row_of[int(i)] for i in wanted], dtype=np.intp)
    counts = None
    if diffraction.has_measured_probe_photon_counts():
        counts = np.asarray(diffraction.get_probe_photon_counts())[rows]
    return AssembledDiffractionData(
        indexes=indexes[rows].copy(),
        patterns=np.asarray(diffraction.get_patterns())[rows].copy(),
        pixel_geometry=diffraction.get_pixel_geometry(),
        bad_pixels=np.asarray(diffraction.get_bad_pixels()).copy(),
        probe_photon_counts=counts,
    )


def _write_half(
    source: Path, target: Path, product: Product, diffraction: AssembledDiffractionData
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / DIFFRACTION_FILE) as tmp:
        save_diffraction_data(tmp, diffraction)
    with atomic_path(target / PRODUCT_FILE) as tmp:
        save_product(tmp, product)
    settings = source / SETTINGS_FILE
    if settings.is_file():
        shutil.copyfile(settings, target / SETTINGS_FILE)
