"""PINN against pty-chi's LSQML on simulated scans, all through ``ptychodus -b reconstruct``.

    python bench/compare.py --json                          # 1e6 photons per pattern
    python bench/compare.py --json --photons 1e6 1e4        # both doses, one JSON line each
    .venv-bench/bin/python bench/compare.py --json --photons 1e6 1e4 --python .venv-bench/bin/python
    # the strong-phase matrix: two sizes x two doses, then a wrong starting probe
    .venv-bench/bin/python bench/compare.py --json --python .venv-bench/bin/python \
        --n 64 128 --photons 1e6 1e4 --phase-range 3 --object-kind fractal
    .venv-bench/bin/python bench/compare.py --json --python .venv-bench/bin/python \
        --phase-range 3 --perturb-probe --methods pinn_standard pinn_quality lsqml

A case is one pattern size (``--n``, default ``--size`` = 64) at one dose (``--photons``);
every size runs at every dose, one JSON line per case. The scan
(``ptychodus_ptychopinn.plugin.simulation.simulate_scan``, i.e. ptychodus's own simulator):
N x N patterns (10 keV, 2 m, 75 um pixels; object pixel 51.7 nm at N = 64, 25.8 nm at
N = 128), a defocused Fresnel zone-plate probe (160 um, outer zone 2 object pixels, 40 um
central stop) whose beam is 0.3 N pixels across (19 at N = 64), step = beam / 3.5, one probe
mode; at N = 64 500 positions on a Fermat spiral, at larger N 400 positions on a raster
jittered by a uniform +-1.5 object pixels (``--positions``, ``--scan``, ``--jitter-px``
override both); an object of ``--object-kind`` (default fractal noise, 4 octaves; also
``dead_leaves``, ``siemens_star``) with amplitude in [0.5, 1] and phase spanning
``--phase-range`` rad peak to peak (default 2, i.e. [-1, 1]; 3 gives [-1.5, 1.5]); Poisson
noise at ``--photons`` mean detected photons per pattern (default 1e6); seed 0. The input
product holds the true positions, a flat object (ones) and the true probe, or with
``--perturb-probe`` a wrong one (below).

``--perturb-probe``: every method (ours and LSQML) starts from the true probe Fresnel-propagated
by a further ``--perturb-defocus`` (default 0.1) times the simulator's own defocus (0.83 mm at
N = 64, 0.41 mm at N = 128; paraxial transfer function on the probe grid, so the beam widens:
RMS diameter 12.3 -> 13.0 px at N = 64) and its amplitude multiplied by ``--perturb-scale``
(default 1.2). Deterministic; relative error 0.52 (0.20 after the best complex scale) at
N = 64. Only the input ``product.h5`` changes: scoring still uses the true object, and the
true probe defines the scored region. The JSON's ``probe_perturbation`` says what was done.

Every method runs in its own ``ptychodus -b reconstruct -i IN -o OUT`` subprocess (the
``ptychodus`` console script next to ``--python``, default: this interpreter; ``python -m
ptychodus`` where there is none), whose ``IN/settings.ini`` selects the algorithm:

- ``pinn_fast`` / ``pinn_standard`` / ``pinn_quality``: ``[Processing] Algorithm =
  pinn_selfsupervised``, ``[PINN] Preset = fast`` / ``standard`` / ``quality``, ``Device =
  cpu`` (``--device``); every other key at its preset value (``config.PRESETS``: time
  budgets and plateau stopping, so these runs end when they converge or run out of time).
- ``lsqml``: ``Algorithm = pty-chi_LSQML`` with ptychodus's pty-chi settings at their
  defaults except ``[PtyChi] NumEpochs = 300`` (``--lsqml-epochs``) and ``UseDevices = false``
  (pty-chi's ``default_device = CPU``; ptychodus 1.7 runs pty-chi in a spawned child process).
  Defaults include batch size 100, probe refinement on, positions fixed, Gaussian noise model;
  ``--lsqml-set SECTION.KEY=VALUE`` (repeatable) changes others, e.g.
  ``--lsqml-set PtyChiLSQML.NoiseModel=POISSON --lsqml-set PtyChiProbe.IsOptimizable=false``.

``--methods`` picks and orders them (default ``pinn_fast pinn_standard lsqml``).

pty-chi is an optional bench dependency (``bash bench/setup_ptychi.sh`` makes ``.venv-bench``
with it). When ``import ptychi`` fails in the ``--python`` interpreter, ``lsqml`` is reported
as ``{"skipped": REASON}`` and the PINN methods still run.

ptychodus keeps its previous algorithm silently when a settings file names an unknown one,
so every run is checked. LSQML: the output files must be exactly ``product.000001.h5`` ..
``product.{NumEpochs}.h5`` (one every NumSyncEpochs when ``--lsqml-set PtyChi.NumSyncEpochs=K``
is given) and the last product must hold NumEpochs losses. PINN: one file per epoch run plus
the first, numbered 1, 2, ... and ending at the progress goal (fit + refine epochs + 1; a
stage that stops early jumps progress to its ceiling), with as many losses in the last product
as the epochs its log's ``refine stopped after K of at most M epochs (S s): REASON.`` lines
add up to. The log must hold the method's own line (``SelfSupervised: 500 patterns of 64 x 64
on cpu, preset fast`` / pty-chi's ``ptychi.api.task: Using device: cpu``, which also proves
LSQML ran on the CPU). A run that fails the check is an error, not a result.

Scored: the LAST ``product.NNNNNN.h5`` written, against the truth, with
``ptychodus.api.metrics`` through ``plugin.simulation.score_object`` (global scale, phase
offset and phase ramp removed; illuminated region of the true probe): amplitude and phase
SSIM and PSNR.

Output (``--json``): one line per case,
``{"case": "n64-1e+06-phase3-fractal-true-probe", "photons": ..., "positions": 500, "n": 64,
"scan": "spiral", "position_jitter_px": 0.0, "object": "fractal", "phase_range_rad": 3.0,
"probe_perturbed": false, ..., "methods": {"pinn_fast": {...}, ..., "lsqml": {...}},
"goals": {...}}``; a method holds ``wall_s`` (the whole subprocess, ~7-15 s of ptychodus
start-up included), ``recon_s`` (ptychodus's own "Reconstruction time"), ``amp_ssim``,
``phase_ssim``, ``amp_psnr``, ``phase_psnr``, ``time_ratio_vs_lsqml`` (wall_s / LSQML's
wall_s; null when LSQML was skipped), ``recon_ratio_vs_lsqml``, ``products`` (files written),
``final_loss`` and ``load_avg_1min`` (the machine's 1-minute load average when the run
started: a busy machine makes every time longer); ours also ``stop_reason`` (why the last
stage ended: ``plateau``, ``time`` or ``epochs``), ``epochs_run`` and ``stages`` (each stage's
reason, epochs, ceiling and seconds).

``goals``, each true or false (absent when LSQML or the method did not run):
issue 2, ``fast_reaches_lsqml_within_2x`` (at 1e6 ``fast`` reaches LSQML's amplitude and phase
SSIM within 2x its wall time) and ``standard_beats_lsqml`` (at 1e4); the strong-phase issue,
with the true probe ``fast_beats_lsqml_in_half_time`` and ``standard_beats_lsqml_in_half_time``
(amplitude and phase SSIM at least LSQML's, wall time at most half of it), and with
``--perturb-probe`` ``{preset}_beats_lsqml_perturbed_probe`` (SSIMs only) and
``{preset}_beats_lsqml_in_half_time_perturbed_probe``. Only the strong-phase goals of a run
with ``--phase-range 3`` (or more) answer that issue.

All methods of one case run back to back in one invocation, so their ratios share the
machine's load; absolute times on a shared machine are upper bounds. Our presets stop on a
time budget, LSQML on its epoch count: under contention ours do fewer epochs (lower scores)
while LSQML takes longer (lower ratios); read ``load_avg_1min`` with both.
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

METHODS = ('pinn_fast', 'pinn_standard', 'pinn_quality', 'lsqml')
DEFAULT_METHODS = ('pinn_fast', 'pinn_standard', 'lsqml')

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
STAGE_END = re.compile(
    r'(\w+) stopped after (\d+) of at most (\d+) epochs \(([0-9.]+) s\): ([^\n]+?)\.\s*$',
    re.MULTILINE,
)


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


def _stages_run(log: str) -> dict[str, dict[str, Any]]:
    """Each stage's stop line in our log (``refine stopped after 17 of at most 100 epochs
    (21.3 s): the loss stopped improving.``) as ``{stage: {'reason', 'epochs', 'max_epochs',
    'seconds'}}``; ``reason`` is the engine's key (``plateau``, ``time``, ``epochs``)."""
    from ptychodus_ptychopinn.engine.events import STOP_REASONS

    keys = {text: key for key, text in STOP_REASONS.items()}
    stages: dict[str, dict[str, Any]] = {}
    for match in STAGE_END.finditer(log):
        stage, epochs, ceiling, seconds, text = match.groups()
        stages[stage] = {
            'reason': keys.get(text, text),
            'epochs': int(epochs),
            'max_epochs': int(ceiling),
            'seconds': float(seconds),
        }
    return stages


def _check_outputs(
    method: str,
    args: argparse.Namespace,
    num_patterns: int,
    n: int,
    log: str,
    written: list[str],
) -> tuple[int, dict[str, dict[str, Any]]]:
    """Prove ``method`` ran and finished: returns (losses expected in the last product, the
    PINN stages' stop lines). Raises RuntimeError otherwise."""
    numbers = [int(name.split('.')[1]) for name in written]
    stages: dict[str, dict[str, Any]] = {}
    if method == 'lsqml':
        epochs, sync = args.lsqml_epochs, _sync_epochs(args.lsqml_set)
        steps = sorted({min(k, epochs) for k in range(sync, epochs + sync, sync)})
        num_losses, line = epochs, 'ptychi.api.task: Using device: cpu'
        ok = numbers == steps
        wanted = f'product.{steps[0]:06d}.h5 .. product.{steps[-1]:06d}.h5 ({len(steps)} files)'
    else:
        from ptychodus_ptychopinn.config import PRESETS

        preset = method.removeprefix('pinn_')
        goal = PRESETS[preset]['epochs'] + PRESETS[preset]['refine_epochs'] + 1
        line = f'SelfSupervised: {num_patterns} patterns of {n} x {n} on {args.device}, '
        line += f'preset {preset}'
        # One product per epoch plus the first (inference or the start object); a stage that
        # stops early (plateau, time budget) jumps progress to its ceiling, so the numbers
        # run 1, 2, ..., k and end at the goal.
        stages = _stages_run(log)
        num_losses = sum(stage['epochs'] for stage in stages.values())
        ok = (
            len(numbers) == num_losses + 1
            and numbers[:1] == [1]
            and numbers[-1:] == [goal]
            and all(a < b for a, b in zip(numbers, numbers[1:]))
        )
        wanted = f'{num_losses + 1} files from product.000001.h5 to product.{goal:06d}.h5'
    if not ok:
        hint = ''
        if method != 'lsqml' and 'SelfSupervised:' not in log:
            hint = (
                '\nOur plugin was not discovered in that environment: reinstall the package '
                f'there (`{args.python} -m pip install -e .`).'
            )
        raise RuntimeError(
            f'{method}: expected {wanted}, got {len(written)} files '
            f'({written[:1]} .. {written[-1:]}): another algorithm may have run.{hint}\n'
            f'{log[-3000:]}'
        )
    if line not in log:
        raise RuntimeError(f'{method}: the log lacks {line!r}; another algorithm may have run')
    return num_losses, stages


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

    written = sorted(p.name for p in out_dir.glob('product.*.h5'))
    num_losses, stages = _check_outputs(method, args, num_patterns, n, log, written)
    last = load_product(out_dir / written[-1])
    if len(last.losses) != num_losses:
        raise RuntimeError(
            f'{method}: {len(last.losses)} losses in the last product, expected {num_losses}'
        )

    score = score_object(last, load_truth(layout))
    match = RECON_TIME.search(log)
    result: dict[str, Any] = {
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
    if method != 'lsqml':
        # the last stage that ran (refine in the presets) says why the run ended
        result['stop_reason'] = list(stages.values())[-1]['reason'] if stages else None
        result['epochs_run'] = num_losses
        result['stages'] = stages
    if not args.keep:
        shutil.rmtree(out_dir)  # LSQML writes one product per epoch
    return result


def _beats(methods: dict[str, dict[str, Any]], name: str) -> bool | None:
    """``name`` scores at least LSQML's amplitude and phase SSIM (None: either did not run)."""
    ours, lsqml = methods.get(name, {}), methods.get('lsqml', {})
    if 'amp_ssim' not in ours or 'amp_ssim' not in lsqml:
        return None
    return ours['amp_ssim'] >= lsqml['amp_ssim'] and ours['phase_ssim'] >= lsqml['phase_ssim']


def _goals(
    photons: float, methods: dict[str, dict[str, Any]], perturbed: bool = False
) -> dict[str, Any]:
    if 'amp_ssim' not in methods.get('lsqml', {}):
        return {}
    goals: dict[str, Any] = {}

    # issue 2 (any case): fast near LSQML at 1e6 within 2x, standard beats it at 1e4
    if photons >= 1e6 and _beats(methods, 'pinn_fast') is not None:
        fast = methods['pinn_fast']
        goals['fast_reaches_lsqml_within_2x'] = bool(
            _beats(methods, 'pinn_fast') and fast['time_ratio_vs_lsqml'] <= 2.0
        )
    if photons <= 1e4 and _beats(methods, 'pinn_standard') is not None:
        goals['standard_beats_lsqml'] = _beats(methods, 'pinn_standard')

    # the strong-phase issue: with the true probe, fast and standard beat LSQML's amplitude
    # and phase SSIM in at most half its wall time; with a perturbed probe, quality wins
    for name in ('pinn_fast', 'pinn_standard', 'pinn_quality'):
        beats = _beats(methods, name)
        if beats is None:
            continue
        preset = name.removeprefix('pinn_')
        half = bool(beats and methods[name]['time_ratio_vs_lsqml'] <= 0.5)
        if perturbed:
            goals[f'{preset}_beats_lsqml_perturbed_probe'] = beats
            goals[f'{preset}_beats_lsqml_in_half_time_perturbed_probe'] = half
        elif name != 'pinn_quality':
            goals[f'{preset}_beats_lsqml_in_half_time'] = half
    return goals


def _defocus_m(n: int, pixel_m: float, wavelength_m: float, beam_fraction: float) -> float:
    """The simulator's own defocus (``simulate_scan``'s default zone plate and beam size)."""
    from ptychodus.api.simulate.probe import FresnelZonePlate

    zone_plate = FresnelZonePlate(
        zone_plate_diameter_m=160e-6,
        outermost_zone_width_m=2.0 * pixel_m,
        central_beamstop_diameter_m=40e-6,
    )
    return beam_fraction * n * pixel_m / (2.0 * zone_plate.get_numerical_aperture(wavelength_m))


def perturb_probe(
    probes: Any, wavelength_m: float, distance_m: float, scale: float
) -> tuple[Any, dict[str, Any]]:
    """``probes`` (a ptychodus ProbeSequence without OPR weights) Fresnel-propagated by
    ``distance_m`` (the paraxial transfer function ``exp(-i pi lambda z (fx^2 + fy^2))`` on the
    probe's own grid, i.e. more defocus: the beam grows) and its amplitude multiplied by
    ``scale``. Deterministic; returns the new ProbeSequence and a description for the JSON."""
    import numpy
    from ptychodus.api.probe import ProbeSequence

    array = numpy.asarray(probes.get_array())
    pixel = probes.get_pixel_geometry()
    fy = numpy.fft.fftfreq(array.shape[-2], d=pixel.height_m)[:, numpy.newaxis]
    fx = numpy.fft.fftfreq(array.shape[-1], d=pixel.width_m)[numpy.newaxis, :]
    transfer = numpy.exp(-1j * numpy.pi * wavelength_m * distance_m * (fx**2 + fy**2))
    moved = numpy.fft.ifft2(numpy.fft.fft2(array, axes=(-2, -1)) * transfer, axes=(-2, -1))
    moved = (scale * moved).astype(array.dtype)

    def width_px(values: Any) -> float:
        # RMS beam diameter (2 sigma) of the summed intensity, in pixels
        intensity = numpy.sum(numpy.abs(values) ** 2, axis=tuple(range(values.ndim - 2)))
        rows, cols = numpy.indices(intensity.shape)
        total = intensity.sum()
        cy, cx = (rows * intensity).sum() / total, (cols * intensity).sum() / total
        spread = (((rows - cy) ** 2 + (cols - cx) ** 2) * intensity).sum() / total
        return float(2.0 * numpy.sqrt(spread / 2.0))

    true_norm = numpy.linalg.norm(array)
    # the error left after the best complex scale (which no method can measure anyway)
    best = numpy.vdot(moved, array) / numpy.vdot(moved, moved)
    described = {
        'defocus_m': distance_m,
        'amplitude_scale': scale,
        'rms_diameter_px_true': round(width_px(array), 2),
        'rms_diameter_px_given': round(width_px(moved), 2),
        'relative_error': round(float(numpy.linalg.norm(moved - array) / true_norm), 3),
        'relative_error_best_scale': round(
            float(numpy.linalg.norm(best * moved - array) / true_norm), 3
        ),
    }
    return (
        ProbeSequence(array=moved, opr_weights=None, pixel_geometry=pixel),
        described,
    )


def _scan_options(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """simulate_scan's scan keywords for pattern size ``n``: 500 positions on a Fermat spiral at
    N = 64; at larger N, 400 positions on a raster jittered by +-1.5 pixels (uniform), unless
    --positions / --scan / --jitter-px say otherwise."""
    kind = args.scan or ('spiral' if n <= 64 else 'raster')
    positions = args.positions or (500 if n <= 64 else 400)
    jitter = args.jitter_px if args.jitter_px is not None else (1.5 if kind == 'raster' else 0.0)
    return {'num_positions': positions, 'scan_kind': kind, 'position_jitter_px': jitter}


def run_case(
    n: int, photons: float, args: argparse.Namespace, ptychi_reason: str | None
) -> dict[str, Any]:
    from dataclasses import replace

    from ptychodus.api.constants import energy_eV_to_wavelength_m
    from ptychodus.api.io import save_product

    from ptychodus_ptychopinn.plugin.simulation import save_layout, simulate_scan

    work = Path(tempfile.mkdtemp(prefix=f'compare-{n}-{photons:g}-', dir=args.work))
    scan_options = _scan_options(n, args)
    scan = simulate_scan(
        pattern_size=n,
        photons_per_pattern=photons,
        seed=args.seed,
        object_kind=args.object,
        phase_range_rad=args.phase_range,
        **scan_options,
    )
    layout = save_layout(work / 'scan', scan)
    perturbation = None
    if args.perturb_probe:
        # the input product only: truth.h5 keeps the true probe (it also defines the
        # illuminated region that is scored)
        wavelength = energy_eV_to_wavelength_m(scan.product.metadata.photon_energy_eV)
        pixel_m = scan.product.probes.get_pixel_geometry().width_m
        distance = args.perturb_defocus * _defocus_m(n, pixel_m, wavelength, 0.3)
        probes, perturbation = perturb_probe(
            scan.product.probes, wavelength, distance, args.perturb_scale
        )
        perturbation['defocus_fraction'] = args.perturb_defocus
        save_product(layout / 'product.h5', replace(scan.product, probes=probes))
    num_patterns, n = scan.counts.shape[0], scan.counts.shape[-1]
    del scan

    case = f'n{n}-{photons:g}-phase{args.phase_range:g}-{args.object}-' + (
        'perturbed-probe' if perturbation else 'true-probe'
    )
    methods: dict[str, dict[str, Any]] = {}
    for method in args.methods:
        if method == 'lsqml' and ptychi_reason is not None:
            methods[method] = {'skipped': ptychi_reason}
            continue
        if not args.json:
            print(f'[{case}] running {method} ...', file=sys.stderr, flush=True)
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
        'case': case,
        'photons': photons,
        'positions': num_patterns,
        'n': n,
        'scan': scan_options['scan_kind'],
        'position_jitter_px': scan_options['position_jitter_px'],
        'object': args.object,
        'phase_range_rad': args.phase_range,
        'probe_perturbed': perturbation is not None,
        **({'probe_perturbation': perturbation} if perturbation else {}),
        'seed': args.seed,
        'device': args.device,
        'lsqml_epochs': args.lsqml_epochs,
        **({'lsqml_set': args.lsqml_set} if args.lsqml_set else {}),
        'cpu_count': os.cpu_count(),
        'load_avg_1min': round(os.getloadavg()[0], 2),
        'methods': methods,
        'goals': _goals(photons, methods, perturbation is not None),
        **({'kept': str(work)} if args.keep else {}),
    }


def run_dose(photons: float, args: argparse.Namespace, ptychi_reason: str | None) -> dict[str, Any]:
    """One dose at ``--size`` (kept for callers of the earlier interface)."""
    return run_case(args.size, photons, args, ptychi_reason)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--json', action='store_true', help='print one JSON line per case')
    parser.add_argument(
        '--photons',
        type=float,
        nargs='+',
        default=[1e6],
        help='mean detected photons per pattern; several run one after the other (default 1e6)',
    )
    parser.add_argument(
        '--n',
        type=int,
        nargs='+',
        default=None,
        help='pattern sizes, each run at every dose (default: --size)',
    )
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        help=f'methods to run, in this order (default: {" ".join(DEFAULT_METHODS)})',
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
    parser.add_argument(
        '--positions',
        type=int,
        default=None,
        help='scan positions (default 500 at N = 64, 400 at larger N)',
    )
    parser.add_argument('--size', type=int, default=64, help='pattern size (default 64)')
    parser.add_argument(
        '--scan',
        choices=('spiral', 'raster'),
        default=None,
        help='scan pattern (default spiral at N = 64, raster at larger N)',
    )
    parser.add_argument(
        '--jitter-px',
        type=float,
        default=None,
        help='uniform position jitter in object pixels (default 1.5 on a raster, else 0)',
    )
    parser.add_argument('--seed', type=int, default=0, help='simulation seed (default 0)')
    parser.add_argument(
        '--object',
        '--object-kind',
        dest='object',
        default='fractal',
        choices=('fractal', 'siemens_star', 'dead_leaves'),
        help='simulated object (default fractal)',
    )
    parser.add_argument(
        '--phase-range',
        type=float,
        default=2.0,
        help='peak-to-peak object phase in rad (default 2: [-1, 1]; strong phase: 3 or more)',
    )
    parser.add_argument(
        '--perturb-probe',
        action='store_true',
        help='give every method a wrong starting probe (see --perturb-defocus, --perturb-scale)',
    )
    parser.add_argument(
        '--perturb-defocus',
        type=float,
        default=0.1,
        help='extra defocus of the given probe, as a fraction of the simulated defocus '
        '(default 0.1)',
    )
    parser.add_argument(
        '--perturb-scale',
        type=float,
        default=1.2,
        help='amplitude factor of the given probe (default 1.2)',
    )
    parser.add_argument('--timeout', type=float, default=3600, help='seconds per ptychodus run')
    parser.add_argument('--work', default=None, help='parent folder for the scratch folders')
    parser.add_argument('--keep', action='store_true', help='keep layouts, outputs and logs')
    args = parser.parse_args()

    ptychi_reason = _ptychi_available(args.python) if 'lsqml' in args.methods else None
    for n in args.n or [args.size]:
        for photons in args.photons:
            out = run_case(n, photons, args, ptychi_reason)
            if args.json:
                print(json.dumps(out), flush=True)
            else:
                print(f'{out["case"]}: {out["positions"]} positions ({out["scan"]})')
                for name, result in out['methods'].items():
                    print(f'  {name:14s} ' + ', '.join(f'{k} {v}' for k, v in result.items()))
                print(f'  goals {out["goals"]}', flush=True)


if __name__ == '__main__':
    main()
