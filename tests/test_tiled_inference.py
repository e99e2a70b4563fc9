"""Inference of scans too large for one canvas: tiles, each tile's windows aligned as one.

Plain physics (an untrained unrolled network: its tail does the work) over a 200-point scan
(N = 64, 1e6 photons, 3 rad fractal), with the canvas limit lowered so that the scan is cut
into overlapping tiles of about 60 points. Measured: one canvas 0.9961 / 0.999 amplitude /
phase SSIM; tiles with one phase per tile 0.9959 / 0.9972; tiles with a phase per window (the
earlier alignment) 0.22 / 0.56, a data misfit of 119 times the noise.
"""

from __future__ import annotations

import importlib

import pytest
from test_tail import _physics_only

from ptychodus_ptychopinn.data.grouping import scan_tiles
from ptychodus_ptychopinn.phase_sync import PhaseSynchroniser

infer_module = importlib.import_module('ptychodus_ptychopinn.engine.infer')
SMALL_TILES = 60 * 64 * 64


def test_canvas_limit_is_a_pixel_budget() -> None:
    assert infer_module.tile_patterns(64) == 8192
    assert infer_module.tile_patterns(128) == 2048
    assert infer_module.tile_patterns(256) == 512


def test_tiles_are_aligned_one_phase_per_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infer_module, 'TILE_PIXELS', SMALL_TILES)
    tiled = _physics_only(16)
    assert tiled['amp_ssim'] > 0.99 and tiled['phase_ssim'] > 0.99


def test_a_phase_per_window_breaks_tiles_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same tiles aligned window by window (``consistent`` ignored)."""
    monkeypatch.setattr(infer_module, 'TILE_PIXELS', SMALL_TILES)
    add = PhaseSynchroniser.add

    def per_window(self, patches, positions, consistent=False):
        add(self, patches, positions, False)

    monkeypatch.setattr(PhaseSynchroniser, 'add', per_window)
    assert _physics_only(16)['phase_ssim'] < 0.9


def test_the_scan_is_really_tiled() -> None:
    from test_tail import _whole_scan

    tiles = scan_tiles(_whole_scan().positions_px, 64, SMALL_TILES // (64 * 64))
    assert len(tiles) >= 4
