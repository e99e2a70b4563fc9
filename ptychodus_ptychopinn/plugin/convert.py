"""ptychodus data <-> engine arrays, and engine results -> ptychodus products.

Inputs: counts stay in their source dtype (no float copy of a uint16 scan), the probe is
the first OPR mode's incoherent stack ``(M, H, W)``, positions are mapped to (x, y) object
pixels with ptychodus's own geometry helpers, and layer 0 of the object is the grid.

OPR: a probe with several OPR modes (or per-position OPR weights) is reconstructed with
the first (shared) mode only, with a warning; the output keeps the input's OPR modes and
weights and replaces only that first mode, and only when the probe was refined. Refusing
such data would block every product that went through an OPR reconstruction, while the
shared mode is the usable average probe.

Losses shown by ptychodus (``Product.losses``, plotted on a log axis) must be positive.
For the Poisson loss we report the *excess* negative log-likelihood: the engine's loss
minus its floor (the counts predicting themselves, ``physics.losses.optimum_poisson_nll``),
i.e. half the mean Poisson deviance per good pixel, plus ``LOSS_OFFSET``. The amplitude
loss is already non-negative and gets only the offset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ptychodus.api.constants import energy_eV_to_wavelength_m
from ptychodus.api.io import TrainingDataFileKeys
from ptychodus.api.object import Object
from ptychodus.api.probe import ProbeSequence
from ptychodus.api.probe_positions import ProbePositionSequence
from ptychodus.api.product import LossValue, Product
from ptychodus.api.reconstruct import ReconstructInput

from ..errors import InputError
from ..factory import Payload, build_payload, single_layer_error
from ..physics.losses import EPS

logger = logging.getLogger(__name__)

LOSS_OFFSET = 1e-12
"""Added to every reported loss so a log axis never sees zero."""
FLOOR_CHUNK = 256


@dataclass(frozen=True)
class ScanArrays:
    """The arrays the engine's ``build_payload`` takes, named as it names them."""

    counts: np.ndarray
    bad_pixels: np.ndarray | None
    probe_modes: np.ndarray
    positions: np.ndarray
    object_init: np.ndarray
    fresnel_number: tuple[float, float] = (0.0, 0.0)

    def payload(self, **kwargs: Any) -> Payload:
        """``factory.build_payload`` on these arrays (``preset``/``overrides`` or ``config``)."""
        return build_payload(
            self.counts,
            self.bad_pixels,
            self.probe_modes,
            self.positions,
            self.object_init,
            fresnel_number=self.fresnel_number,
            **kwargs,
        )


def scan_arrays(parameters: ReconstructInput) -> ScanArrays:
    """Extract engine arrays from ptychodus's reconstruct input (no copy of the counts)."""
    product = parameters.product
    obj = product.object_
    if obj.num_layers != 1:
        raise single_layer_error(f'{obj.num_layers} layers')
    geometry = obj.get_geometry()
    x = geometry.map_probe_positions_to_object_x_px(product.probe_positions)
    y = geometry.map_probe_positions_to_object_y_px(product.probe_positions)
    _warn_if_opr(product.probes)
    return ScanArrays(
        counts=np.asarray(parameters.diffraction_patterns),
        bad_pixels=None if parameters.bad_pixels is None else np.asarray(parameters.bad_pixels),
        probe_modes=product.probes.get_probe_no_opr().get_array(),
        positions=np.stack([np.asarray(x, float), np.asarray(y, float)], axis=-1),
        object_init=obj.get_layer(0),
        fresnel_number=fresnel_number(product),
    )


def fresnel_number(product: Product) -> tuple[float, float]:
    """The detector's per-pixel Fresnel numbers ``dx**2 / (lambda z)`` (x, y) of a far-field
    product, from its metadata and probe pixels: what ptychodus's far-field simulator
    (``FresnelTransformPropagator``) puts in the chirp it applies to every exit wave. (0, 0),
    the Fraunhofer model, when the product is not far field or lacks a wavelength or distance."""
    metadata = product.metadata
    if not metadata.far_field:
        return 0.0, 0.0
    geometry = product.probes.get_geometry()
    return _fresnel(
        metadata.photon_wavelength_m,
        metadata.detector_distance_m,
        geometry.pixel_width_m,
        geometry.pixel_height_m,
    )


def _fresnel(wavelength: float, distance: float, dx: float, dy: float) -> tuple[float, float]:
    """``(dx**2, dy**2) / (lambda z)``; (0, 0) when the geometry is missing or not physical."""
    values = [float(v) for v in (wavelength, distance, dx, dy)]
    if not all(np.isfinite(v) and v > 0.0 for v in values):
        return 0.0, 0.0
    wavelength, distance, dx, dy = values
    return dx * dx / (wavelength * distance), dy * dy / (wavelength * distance)


def _warn_if_opr(probes: ProbeSequence) -> None:
    weights = probes.get_opr_weights_or_none()
    varies = weights is not None and not np.allclose(weights[:, 0], weights[0, 0])
    if probes.num_coherent_modes > 1 or varies:
        logger.warning(
            'The probe has %d OPR modes%s; PINN uses only the first (shared) mode and keeps '
            'the other OPR modes and weights unchanged in its output.',
            probes.num_coherent_modes,
            ' with position-dependent weights' if varies else '',
        )


def load_training_file(path: Path) -> ScanArrays:
    """Read one file written by ``ptychodus.api.io.save_training_data`` (our export)."""
    keys = TrainingDataFileKeys
    try:
        with h5py.File(path, 'r') as handle:
            missing = [k.value for k in _REQUIRED if k.value not in handle]
            if missing:
                raise InputError(
                    f'{path} is not ptychodus training data (missing {", ".join(missing)}); '
                    'export it with Export Training Data on the pinn_pretrained reconstructor.'
                )
            counts = handle[keys.PATTERNS][()]
            bad = handle[keys.BAD_PIXELS][()] if keys.BAD_PIXELS in handle else None
            probe = handle[keys.PROBE_ARRAY][()]
            obj = handle[keys.OBJECT_ARRAY][()]
            x = handle[keys.PROBE_POSITION_X_PX][()]
            y = handle[keys.PROBE_POSITION_Y_PX][()]
            geometry = [
                float(handle[k][()]) if k in handle else 0.0
                for k in (
                    keys.PHOTON_ENERGY,
                    keys.DETECTOR_OBJECT_DISTANCE,
                    keys.OBJECT_PIXEL_WIDTH,
                    keys.OBJECT_PIXEL_HEIGHT,
                )
            ]
    except OSError as exc:
        raise InputError(f'cannot read training data {path}: {exc}') from exc
    if obj.ndim == 3:
        obj = obj[0]
    energy, distance, dx, dy = geometry  # training data are far field (ptychodus's export)
    wavelength = energy_eV_to_wavelength_m(energy) if energy > 0.0 else 0.0
    return ScanArrays(
        counts=counts,
        bad_pixels=None if bad is None else bad.astype(bool),
        probe_modes=probe,
        positions=np.stack([np.asarray(x, float), np.asarray(y, float)], axis=-1),
        object_init=obj,
        fresnel_number=_fresnel(wavelength, distance, dx, dy),
    )


_REQUIRED = (
    TrainingDataFileKeys.PATTERNS,
    TrainingDataFileKeys.PROBE_ARRAY,
    TrainingDataFileKeys.OBJECT_ARRAY,
    TrainingDataFileKeys.PROBE_POSITION_X_PX,
    TrainingDataFileKeys.PROBE_POSITION_Y_PX,
)


def is_training_file(path: Path) -> bool:
    """True for an HDF5 file holding ptychodus training-data datasets."""
    try:
        with h5py.File(path, 'r') as handle:
            return all(k.value in handle for k in _REQUIRED)
    except OSError:
        return False


class LossScale:
    """Turns the engine's loss history into positive ``LossValue`` entries (see module doc).

    The floor is computed per pattern in float64; the network fit averages over group
    members (patterns repeat across groups), refinement over patterns, so each stage has
    its own floor. Progress values up to ``fit_epochs`` are fit epochs, later ones refine.
    """

    def __init__(self, payload: Payload, fit_epochs: int) -> None:
        self.fit_epochs = fit_epochs
        train = payload.config.pinn.train
        self.fit_floor = self.refine_floor = 0.0
        if 'poisson' in (train.loss, train.refine_loss):
            per_pattern = _poisson_floor_per_pattern(payload.counts, payload.good)
            if train.loss == 'poisson':
                self.fit_floor = float(per_pattern[payload.groups.members].mean())
            if train.refine_loss == 'poisson':
                self.refine_floor = float(per_pattern.mean())

    def value(self, progress: int, loss: float) -> float:
        floor = self.fit_floor if progress <= self.fit_epochs else self.refine_floor
        return max(loss - floor, 0.0) + LOSS_OFFSET

    def losses(self, history: Iterable[tuple[int, float]]) -> list[LossValue]:
        return [LossValue(epoch=int(p), value=self.value(p, v)) for p, v in history]


def _poisson_floor_per_pattern(counts: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Mean over good pixels of ``I + eps - I log(I + eps)`` for each pattern."""
    floors = np.empty(counts.shape[0])
    for start in range(0, counts.shape[0], FLOOR_CHUNK):
        block = np.asarray(counts[start : start + FLOOR_CHUNK], dtype=np.float64)[:, good]
        lam = block + EPS
        floors[start : start + len(block)] = (lam - block * np.log(lam)).mean(axis=-1)
    return floors


class ProductBuilder:
    """Builds output products on the input product's grid, probe geometry and metadata."""

    def __init__(self, product: Product) -> None:
        self.product = product
        self._object = product.object_

    def build(
        self,
        object_array: np.ndarray,
        probe_modes: np.ndarray | None,
        losses: list[LossValue],
        positions_px: np.ndarray | None = None,
    ) -> Product:
        """``probe_modes`` None keeps the input probe unchanged (no probe refinement);
        ``positions_px`` (K, 2) as (x, y) object pixels replaces the scan positions (position
        refinement), else they are kept."""
        source = self._object
        array = np.asarray(object_array).astype(source.dtype, copy=False)
        obj = Object(
            array=array[np.newaxis],
            pixel_geometry=source.get_pixel_geometry(),
            center=source.get_center(),
            layer_spacing_m=list(source.layer_spacing_m),
        )
        probes = self.product.probes
        if probe_modes is not None:
            stack = probes.get_array().copy()
            stack[0] = np.asarray(probe_modes).astype(stack.dtype, copy=False)
            weights = probes.get_opr_weights_or_none()
            probes = ProbeSequence(
                array=stack,
                opr_weights=None if weights is None else weights.copy(),
                pixel_geometry=probes.get_pixel_geometry(),
            )
        return Product(
            metadata=self.product.metadata,
            probe_positions=self._positions(positions_px),
            probes=probes,
            object_=obj,
            losses=losses,
        )

    def _positions(self, positions_px: np.ndarray | None) -> ProbePositionSequence:
        """The input positions moved by the refined ones' offsets, in metres (the mapping
        to object pixels is linear, so the offset times the pixel size is exact)."""
        original = self.product.probe_positions
        if positions_px is None:
            return original
        geometry = self._object.get_geometry()
        x0 = geometry.map_probe_positions_to_object_x_px(original)
        y0 = geometry.map_probe_positions_to_object_y_px(original)
        moved = np.asarray(positions_px, dtype=float)
        if moved.shape != (len(original), 2):
            raise ValueError(f'{moved.shape} refined positions for {len(original)} scan points')
        pixel = self._object.get_pixel_geometry()
        return ProbePositionSequence(
            [
                replace(
                    point,
                    x_m=float(point.x_m + (moved[k, 0] - x0[k]) * pixel.width_m),
                    y_m=float(point.y_m + (moved[k, 1] - y0[k]) * pixel.height_m),
                )
                for k, point in enumerate(original)
            ]
        )
