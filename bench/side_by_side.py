"""pty-chi's LSQML on the odd/even halves that bench/realdata.py reconstructs, and one figure of
both methods' halves and FRC curves (used by ``bench/realdata.py --lsqml PYTHON``).

LSQML runs through ptychodus's batch mode (``ptychodus -b reconstruct``) in the environment of
``PYTHON`` (``bash bench/setup_ptychi.sh`` makes one: ``.venv-bench/bin/python``) with
ptychodus's pty-chi defaults and ``epochs`` epochs on the CPU, as bench/compare.py runs it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import _lsqml_settings, _ptychi_available, _ptychodus_command  # noqa: E402


def run_lsqml_half(layout: Path, work: Path, python: str, epochs: int) -> tuple[Path, float]:
    """LSQML on one layout directory; returns its last product file and the wall time."""
    reason = _ptychi_available(python)
    if reason is not None:
        raise SystemExit(f'--lsqml {python}: {reason} (bash bench/setup_ptychi.sh makes one)')
    in_dir, out_dir = work / f'{layout.name}.lsqml.in', work / f'{layout.name}.lsqml.out'
    in_dir.mkdir(parents=True)
    for name in ('diffraction.h5', 'product.h5'):
        (in_dir / name).symlink_to(layout.resolve() / name)
    (in_dir / 'settings.ini').write_text(_lsqml_settings(epochs, []))
    command = [*_ptychodus_command(python), '-b', 'reconstruct', '-i', str(in_dir)]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, '-o', str(out_dir)], capture_output=True, text=True, timeout=3600
    )
    wall = time.perf_counter() - start
    log = done.stdout + done.stderr
    (work / f'{layout.name}.lsqml.log').write_text(log)
    products = sorted(out_dir.glob('product.*.h5'))
    if done.returncode != 0 or not products:
        raise RuntimeError(f'LSQML on {layout}: exit {done.returncode}, no product:\n{log[-3000:]}')
    if 'ptychi.api.task: Using device: cpu' not in log:
        raise RuntimeError(f'LSQML on {layout}: the log does not show pty-chi running on the CPU')
    last = products[-1]
    for extra in products[:-1]:  # one product per epoch: keep only the last
        extra.unlink()
    return last, wall


def plot_side_by_side(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Each method's aligned odd and even phase images in a row, and all FRC curves (with the
    half-bit threshold) in the last column."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = len(results)
    figure = plt.figure(figsize=(12, 3.6 * rows))
    grid = figure.add_gridspec(rows, 3)
    curves = figure.add_subplot(grid[:, 2])
    threshold = None
    for row, (name, result) in enumerate(results.items()):
        for col, key in enumerate(('aligned_a', 'aligned_b')):
            axis = figure.add_subplot(grid[row, col])
            axis.imshow(np.angle(result[key]), cmap='twilight')
            axis.set_title(f'{name}: {("odd", "even")[col]} half, phase', fontsize=9)
            axis.set_axis_off()
        frequency = np.asarray(result['frequency_per_nm']) * 1e3
        half_bit = result['frc_half_bit_nm']
        label = f'{name}: AUC {result["frc_auc"]:.3f}, half-bit ' + (
            'none' if half_bit is None else f'{half_bit:.1f} nm'
        )
        curves.plot(frequency, result['correlation'], label=label, linewidth=1)
        threshold = (frequency, result['half_bit_threshold'])
    if threshold is not None:
        curves.plot(*threshold, 'k--', label='half-bit threshold', linewidth=1)
    curves.set_xlabel('spatial frequency (1/um)')
    curves.set_ylim(-0.1, 1.05)
    curves.set_title('odd/even FRC', fontsize=9)
    curves.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    from PIL import Image  # matplotlib's own dependency: a palette PNG is ~5x smaller

    with Image.open(path) as image:
        small = image.convert('RGB').convert('P', palette=Image.Palette.ADAPTIVE, colors=128)
    small.save(path, optimize=True)
    return path
