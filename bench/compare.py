"""PINN against pty-chi's LSQML on one simulated scan, all through ``ptychodus -b reconstruct``.

    python bench/compare.py --json                          # 1e6 photons per pattern
    python bench/compare.py --json --photons 1e6 1e4        # both doses, one JSON line each
    .venv-bench/bin/python bench/compare.py --json --photons 1e6 1e4 --python .venv-bench/bin/python

The scan (``ptychodus_ptychopinn.plugin.simulation.simulate_scan`` defaults, i.e. ptychodus's
own simulator): 500 positions on a Fermat spiral, 64 x 64 patterns (10 keV, 2 m, 75 um
pixels, object pixel 51.7 nm), a defocused Fresnel zone-plate probe (160 um, outer zone 2
object pixels, 40 um central stop) whose beam is 0.3 x 64 = 19 pixels across, step = beam /
3.5, one probe mode; a fractal-noise object (4 octaves, amplitude in [0.5, 1], phase in
[-1, 1] rad); Poisson noise at ``--photons`` mean detected photons per pattern (default 1e6);
seed 0. The input product holds the true probe, the true positions and a flat object (ones).

Every method runs in its own ``ptychodus -b reconstruct -i IN -o OUT`` subprocess (the
``ptychodus`` console script next to ``--python``, default: this interpreter; ``python -m
ptychodus`` where there is none), whose ``IN/settings.ini`` selects the algorithm:

- ``pinn_fast`` / ``pinn_standard``: ``[Processing] Algorithm = pinn_selfsupervised``,
  ``[PINN] Preset = fast`` / ``standard``, ``Device = cpu`` (``--device``); every other key at
  its preset value.
- ``lsqml``: ``Algorithm = pty-chi_LSQML`` with ptychodus's pty-chi settings at their
  defaults except ``[PtyChi] NumEpochs = 300`` (``--lsqml-epochs``) and ``UseDevices = false``
  (pty-chi's ``default_device = CPU``; ptychodus 1.7 runs pty-chi in a spawned child process).
  Defaults include batch size 100, probe refinement on, positions fixed, Gaussian noise model;
  ``--lsqml-set SECTION.KEY=VALUE`` (repeatable) changes others, e.g.
  ``--lsqml-set PtyChiLSQML.NoiseModel=POISSON --lsqml-set PtyChiProbe.IsOptimizable=false``.

pty-chi is an optional bench dependency (``bash bench/setup_ptychi.sh`` makes ``.venv-bench``
with it). When ``import ptychi`` fails in the ``--python`` interpreter, ``lsqml`` is reported
as ``{"skipped": REASON}`` and the PINN methods still run.

ptychodus keeps its previous algorithm silently when a settings file names an unknown one,
so every run is checked: the output files must be exactly ``product.000001.h5`` .. up to
that method's progress goal (fit + refine epochs + 1 for PINN, NumEpochs for LSQML; one every
NumSyncEpochs when ``--lsqml-set PtyChi.NumSyncEpochs=K`` is given), the last
product's losses must have the expected length, and the log must hold the method's own line
(``SelfSupervised: 500 patterns of 64 x 64 on cpu, preset fast`` / pty-chi's
``ptychi.api.task: Using device: cpu``, which also proves LSQML ran on the CPU).
A run that fails the check is an error, not a result.

Scored: the LAST ``product.NNNNNN.h5`` written, against the truth, with
``ptychodus.api.metrics`` through ``plugin.simulation.score_object`` (global scale, phase
offset and phase ramp removed; illuminated region): amplitude and phase SSIM and PSNR.

Output (``--json``): one line per dose,
``{"photons": ..., "positions": 500, "n": 64, ..., "methods": {"pinn_fast": {...},
"pinn_standard": {...}, "lsqml": {...}}, "goals": {...}}``; a method holds ``wall_s`` (the
whole subprocess, ~7 s of ptychodus start-up included), ``recon_s`` (ptychodus's own
"Reconstruction time"), ``amp_ssim``, ``phase_ssim``, ``amp_psnr``, ``phase_psnr``,
``time_ratio_vs_lsqml`` (wall_s / LSQML's wall_s; null when LSQML was skipped),
``recon_ratio_vs_lsqml``, ``products`` (files written), ``final_loss`` and
``load_avg_1min`` (the machine's 1-minute load average when the run started: a busy machine
makes every time longer). ``goals`` (issue 2):
at 1e6 the fast preset reaches LSQML's amplitude and phase SSIM within 2x its wall time; at
1e4 the standard preset beats LSQML's amplitude and phase SSIM.

All methods of one dose run back to back in one invocation, so their ratios share the
machine's load; absolute times on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

METHODS = ('pinn_fast', 'pinn_standard', 'lsqml')

PINN_SETTINGS = """[Processing]
Algorithm = pinn_selfsupervised

[PINN]
Preset = {preset}
Device = {device}
"""

LSQML_SETTINGS: dict[str, dict[str, str]] = {
    'Processing': {'Algorithm': 'pty-chi_LSQML'},
    'PtyChi': {'NumEpochs': '300', 'UseDevices': 'false'},
}

RECON_TIME = re.compile(r'Reconstruction time ([0-9.]+) seconds')


def _ptychodus_command(python: str) -> list[str]:
    script = Path(python).parent / 'ptychodus'
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [python, '-m', 'ptychodus']


def _ptychi_available(python: str) -> str | None:
    """None when ``import ptychi`` works in ``python``, else the reason it does not."""
    probe = subprocess.run(
        [python, '-c', 'import ptychi, torchvision'], capture_output=True, text=True, timeout=300
    )
    if probe.returncode == 0:
        return None
    lines = [line for line in probe.stderr.strip().splitlines() if line.strip()]
    return f'import ptychi failed in {python}: ' + (
        lines[-1] if lines else f'exit {probe.returncode}'
    )


def _sync_epochs(assignments: list[str]) -> int:
    """``[PtyChi] NumSyncEpochs`` (ptychodus default 1): LSQML yields every that many epochs."""
    value = 1
    for item in assignments:
        key, _, text = item.partition('=')
        if key.strip().casefold() == 'ptychi.numsyncepochs':
            value = int(text)
    return max(1, value)


def _expected(
    method: str, args: argparse.Namespace, num_patterns: int, n: int
) -> tuple[list[int], int, str]:
    """(progress values of the files expected, losses in the last product, a log line)."""
    if method == 'lsqml':
        epochs, sync = args.lsqml_epochs, _sync_epochs(args.lsqml_set)
        steps = sorted({min(k, epochs) for k in range(sync, epochs + sync, sync)})
        return steps, epochs, 'ptychi.api.task: Using device: cpu'
    device = args.device
    from ptychodus_ptychopinn.config import PRESETS

    preset = method.removeprefix('pinn_')
    fit, refine = PRESETS[preset]['epochs'], PRESETS[preset]['refine_epochs']
    goal = fit + refine + 1
    return (
        list(range(1, goal + 1)),
        goal - 1,
        f'SelfSupervised: {num_patterns} patterns of {n} x {n} on {device}, preset {preset}',
    )


def _lsqml_settings(epochs: int, assignments: list[str]) -> str:
    """The LSQML settings file: ``LSQML_SETTINGS`` plus ``--lsqml-set SECTION.KEY=VALUE`` items
    merged into it (one ``[SECTION]`` each: ptychodus ignores a file with a repeated section)."""
    sections = {name: dict(keys) for name, keys in LSQML_SETTINGS.items()}
    sections['PtyChi']['NumEpochs'] = str(epochs)
    for item in assignments:
        key, sep, value = item.partition('=')
        section, dot, name = key.strip().partition('.')
        if not (sep and dot and section and name):
            raise SystemExit(f'--lsqml-set {item!r}: expected SECTION.KEY=VALUE')
        if section == 'PtyChi' and name.casefold() in ('numepochs', 'usedevices'):
            raise SystemExit(f'--lsqml-set {item!r}: use --lsqml-epochs (LSQML runs on the CPU)')
        if section == 'Processing':
            raise SystemExit(f'--lsqml-set {item!r}: the algorithm is fixed')
        sections.setdefault(section, {})[name] = value.strip()
    return '\n'.join(
        f'[{section}]\n' + ''.join(f'{k} = {v}\n' for k, v in keys.items())
        for section, keys in sections.items()
    )


def _sync_epochs(assignments: list[str]) -> int:
    """``[PtyChi] NumSyncEpochs`` (ptychodus default 1): LSQML yields every that many epochs."""
    value = 1
    for item in assignments:
        key, _, text = item.partition('=')
        if key.strip().casefold() == 'ptychi.numsyncepochs':
            value = int(text)
    return max(1, value)


def _expected(
    method: str, args: argparse.Namespace, num_patterns: int, n: int
) -> tuple[list[int], int, str]:
    """(progress values of the files expected, losses in the last product, a log line)."""
    if method == 'lsqml':
        epochs, sync = args.lsqml_epochs, _sync_epochs(args.lsqml_set)
        steps = sorted({min(k, epochs) for k in range(sync, epochs + sync, sync)})
        return steps, epochs, 'ptychi.api.task: Using device: cpu'
    device = args.device
    from ptychodus_ptychopinn.config import PRESETS

    preset = method.removeprefix('pinn_')
    fit, refine = PRESETS[preset]['epochs'], PRESETS[preset]['refine_epochs']
    goal = fit + refine + 1
    return (
        list(range(1, goal + 1)),
        goal - 1,
        f'SelfSupervised: {num_patterns} patterns of {n} x {n} on {device}, preset {preset}',
    )


def _extra_sections(assignments: list[str]) -> str:
    """``['PtyChiLSQML.NoiseModel=POISSON', ...]`` as extra ``.ini`` sections."""
    sections: dict[str, list[str]] = {}
    for item in assignments:
        key, sep, value = item.partition('=')
        section, dot, name = key.partition('.')
        if not (sep and dot and section and name):
            raise SystemExit(f'--lsqml-set {item!r}: expected SECTION.KEY=VALUE')
        if section == 'PtyChi' and name.casefold() in ('numepochs', 'usedevices'):
            raise SystemExit(f'--lsqml-set {item!r}: use --lsqml-epochs (LSQML runs on the CPU)')
        sections.setdefault(section, []).append(f'{name} = {value}')
    return ''.join(f'\n[{sec}]\n' + '\n'.join(lines) + '\n' for sec, lines in sections.items())


def _run_method(
    method: str,
    layout: Path,
    work: Path,
    args: argparse.Namespace,
    num_patterns: int,
    n: int,
) -> dict[str, Any]:
    from ptychodus.api.io import load_product

    from ptychodus_ptychopinn.plugin.simulation import load_truth, score_object

    in_dir = work / f'{method}.in'
    out_dir = work / f'{method}.out'
    in_dir.mkdir()
    for name in ('diffraction.h5', 'product.h5'):
        (in_dir / name).symlink_to(layout / name)
    if method == 'lsqml':
        settings = _lsqml_settings(args.lsqml_epochs, args.lsqml_set)
    else:
        settings = PINN_SETTINGS.format(preset=method.removeprefix('pinn_'), device=args.device)
    (in_dir / 'settings.ini').write_text(settings)

    command = [*_ptychodus_command(args.python), '-b', 'reconstruct', '-i', str(in_dir)]
    command += ['-o', str(out_dir)]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - start
    log = done.stdout + done.stderr
    (work / f'{method}.log').write_text(log)
    if done.returncode != 0:
        raise RuntimeError(f'{method}: ptychodus exited {done.returncode}:\n{log[-3000:]}')

    steps, num_losses, line = _expected(method, args, num_patterns, n)
    written = sorted(p.name for p in out_dir.glob('product.*.h5'))
    if written != [f'product.{k:06d}.h5' for k in steps]:
        hint = ''
        if method != 'lsqml' and 'SelfSupervised:' not in log:
            hint = (
                '\nOur plugin was not discovered in that environment: reinstall the package '
                f'there (`{args.python} -m pip install -e .`).'
            )
        raise RuntimeError(
            f'{method}: expected product.{steps[0]:06d}.h5 .. product.{steps[-1]:06d}.h5 '
            f'({len(steps)} files), got {len(written)} '
            f'files ({written[:1]} .. {written[-1:]}): another algorithm may have run.{hint}\n'
            f'{log[-3000:]}'
        )
    if line not in log:
        raise RuntimeError(f'{method}: the log lacks {line!r}; another algorithm may have run')
    last = load_product(out_dir / written[-1])
    if len(last.losses) != num_losses:
        raise RuntimeError(
            f'{method}: {len(last.losses)} losses in the last product, expected {num_losses}'
        )

    score = score_object(last, load_truth(layout))
    match = RECON_TIME.search(log)
    result = {
        'wall_s': round(wall, 1),
        'recon_s': round(float(match.group(1)), 1) if match else None,
        'amp_ssim': round(score['amp_ssim'], 4),
        'phase_ssim': round(score['phase_ssim'], 4),
        'amp_psnr': round(score['amp_psnr'], 2),
        'phase_psnr': round(score['phase_psnr'], 2),
        'products': len(written),
        'load_avg_1min': round(load_before, 2),
        'final_loss': float(f'{last.losses[-1].value:.4g}') if last.losses else None,
    }
    if not args.keep:
        shutil.rmtree(out_dir)  # LSQML writes one product per epoch
    return result


def _goals(photons: float, methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    lsqml = methods.get('lsqml', {})
    if 'amp_ssim' not in lsqml:
        return {}
    goals: dict[str, Any] = {}

    def beats(name: str) -> bool | None:
        ours = methods.get(name, {})
        if 'amp_ssim' not in ours:
            return None
        return ours['amp_ssim'] >= lsqml['amp_ssim'] and ours['phase_ssim'] >= lsqml['phase_ssim']

    if photons >= 1e6 and beats('pinn_fast') is not None:
        fast = methods['pinn_fast']
        goals['fast_reaches_lsqml_within_2x'] = bool(
            beats('pinn_fast') and fast['time_ratio_vs_lsqml'] <= 2.0
        )
    if photons <= 1e4 and beats('pinn_standard') is not None:
        goals['standard_beats_lsqml'] = beats('pinn_standard')
    return goals


def run_dose(photons: float, args: argparse.Namespace, ptychi_reason: str | None) -> dict[str, Any]:
    from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan

    work = Path(tempfile.mkdtemp(prefix=f'compare-{photons:g}-', dir=args.work))
    scan = simulate_scan(
        pattern_size=args.size,
        num_positions=args.positions,
        photons_per_pattern=photons,
        seed=args.seed,
        object_kind=args.object,
    )
    layout = save_layout(work / 'scan', scan)
    num_patterns, n = scan.counts.shape[0], scan.counts.shape[-1]
    del scan

    methods: dict[str, dict[str, Any]] = {}
    for method in args.methods:
        if method == 'lsqml' and ptychi_reason is not None:
            methods[method] = {'skipped': ptychi_reason}
            continue
        if not args.json:
            print(f'[{photons:g} photons] running {method} ...', file=sys.stderr, flush=True)
        methods[method] = _run_method(method, layout, work, args, num_patterns, n)

    lsqml = methods.get('lsqml', {})
    for result in methods.values():
        if 'wall_s' not in result:
            continue
        has = 'wall_s' in lsqml
        result['time_ratio_vs_lsqml'] = (
            round(result['wall_s'] / lsqml['wall_s'], 3) if has else None
        )
        recon = lsqml.get('recon_s') if has else None
        result['recon_ratio_vs_lsqml'] = (
            round(result['recon_s'] / recon, 3) if recon and result['recon_s'] else None
        )

    if not args.keep:
        shutil.rmtree(work)
    return {
        'photons': photons,
        'positions': num_patterns,
        'n': n,
        'object': args.object,
        'seed': args.seed,
        'device': args.device,
        'lsqml_epochs': args.lsqml_epochs,
        **({'lsqml_set': args.lsqml_set} if args.lsqml_set else {}),
        'cpu_count': os.cpu_count(),
        'load_avg_1min': round(os.getloadavg()[0], 2),
        'methods': methods,
        'goals': _goals(photons, methods),
        **({'kept': str(work)} if args.keep else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line per dose')
    parser.add_argument(
        '--photons',
        type=float,
        nargs='+',
        default=[1e6],
        help='mean detected photons per pattern; several run one after the other (default 1e6)',
    )
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=METHODS,
        default=list(METHODS),
        help='methods to run (default: all)',
    )
    parser.add_argument(
        '--python',
        default=sys.executable,
        help='interpreter whose ptychodus runs the reconstructions (default: this one); it '
        'needs our plugin discovered and, for LSQML, ptychi (bench/setup_ptychi.sh)',
    )
    parser.add_argument('--lsqml-epochs', type=int, default=300, help='LSQML epochs (default 300)')
    parser.add_argument(
        '--lsqml-set',
        action='append',
        default=[],
        metavar='SECTION.KEY=VALUE',
        help='extra ptychodus pty-chi setting for LSQML, repeatable, e.g. '
        'PtyChiLSQML.NoiseModel=POISSON or PtyChiProbe.IsOptimizable=false',
    )
    parser.add_argument('--device', default='cpu', help='[PINN] Device (default cpu)')
    parser.add_argument('--positions', type=int, default=500, help='scan positions (default 500)')
    parser.add_argument('--size', type=int, default=64, help='pattern size (default 64)')
    parser.add_argument('--seed', type=int, default=0, help='simulation seed (default 0)')
    parser.add_argument(
        '--object',
        default='fractal',
        choices=('fractal', 'siemens_star', 'dead_leaves'),
        help='simulated object (default fractal)',
    )
    parser.add_argument('--timeout', type=float, default=3600, help='seconds per ptychodus run')
    parser.add_argument('--work', default=None, help='parent folder for the scratch folders')
    parser.add_argument('--keep', action='store_true', help='keep layouts, outputs and logs')
    args = parser.parse_args()

    ptychi_reason = _ptychi_available(args.python) if 'lsqml' in args.methods else None
    for photons in args.photons:
        out = run_dose(photons, args, ptychi_reason)
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            print(f'photons {photons:g}, {out["positions"]} positions, {out["n"]} x {out["n"]}')
            for name, result in out['methods'].items():
                print(f'  {name:14s} ' + ', '.join(f'{k} {v}' for k, v in result.items()))
            print(f'  goals {out["goals"]}', flush=True)


if __name__ == '__main__':
    main()
