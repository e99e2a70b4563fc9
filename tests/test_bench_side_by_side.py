"""bench/side_by_side.py: the LSQML-beside-ours figure and its missing-pty-chi message."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))

from side_by_side import plot_side_by_side, run_lsqml_half  # noqa: E402


def _result(auc: float, half_bit: float | None) -> dict[str, object]:
    rng = np.random.default_rng(0)
    frequency = np.linspace(0.0, 0.05, 40)
    return {
        'frc_auc': auc,
        'frc_half_bit_nm': half_bit,
        'frequency_per_nm': frequency,
        'correlation': np.exp(-frequency / 0.02),
        'half_bit_threshold': np.full(40, 0.25),
        'aligned_a': np.exp(1j * rng.uniform(-1, 1, (48, 48))),
        'aligned_b': np.exp(1j * rng.uniform(-1, 1, (48, 48))),
    }


def test_figure_has_a_row_per_method_and_is_a_small_palette_png(tmp_path: Path) -> None:
    from PIL import Image

    one = plot_side_by_side({'standard': _result(0.38, 42.9)}, tmp_path / 'one.png')
    two = plot_side_by_side(
        {'standard': _result(0.38, 42.9), 'LSQML': _result(0.35, None)}, tmp_path / 'two.png'
    )
    with Image.open(one) as a, Image.open(two) as b:
        assert a.mode == b.mode == 'P'
        assert b.size[0] == a.size[0] and b.size[1] > 1.8 * a.size[1]  # rows stack


@pytest.mark.skipif(
    importlib.util.find_spec('ptychi') is not None, reason='pty-chi is installed here'
)
def test_lsqml_without_ptychi_says_how_to_get_it(tmp_path: Path) -> None:
    layout = tmp_path / 'odd'
    layout.mkdir()
    with pytest.raises(SystemExit, match='setup_ptychi.sh'):
        run_lsqml_half(layout, tmp_path, sys.executable, 200)
    assert not (tmp_path / 'odd.lsqml.in').exists()  # nothing written before the check
