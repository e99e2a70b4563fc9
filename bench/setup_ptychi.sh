#!/usr/bin/env bash
# Create .venv-bench: a separate environment for bench/compare.py in which ptychodus can run
# both our PINN reconstructors and pty-chi's LSQML.
#
#     bash bench/setup_ptychi.sh            # creates ./.venv-bench (gitignored)
#     VENV=/some/dir PYTHON=python3.12 bash bench/setup_ptychi.sh
#
# Why a separate environment: pty-chi (ptychi==2.1.*, the series ptychodus 1.7 pins) imports
# torchvision at module load. Next to the CPU build of torch, pip pulls the newest torchvision,
# which replaces torch with a mismatched build, and PyPI's torchvision for torch 2.13 has a native
# part that does not load on a CPU-only torch. So torch and torchvision are installed as a
# matching pair first (torch 2.14.1 + torchvision 0.29.1: a CUDA build, ~5.5 GB, that also runs
# on the CPU) and pty-chi is installed with them pinned. Nothing here touches the main .venv.
#
# Afterwards: .venv-bench/bin/python bench/compare.py --json --python .venv-bench/bin/python
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-bench}"
PYTHON="${PYTHON:-python3.11}"
TORCH="${TORCH:-torch==2.14.1}"
TORCHVISION="${TORCHVISION:-torchvision==0.29.1}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --upgrade pip

# 1. a matching torch/torchvision pair, 2. pty-chi with that pair held fixed,
# 3. ptychodus and our package (editable) with the same pins, so nothing swaps torch.
"$PY" -m pip install "$TORCH" "$TORCHVISION"
"$PY" -m pip install 'ptychi==2.1.*' "$TORCH" "$TORCHVISION"
"$PY" -m pip install -e "$ROOT" 'ptychodus>=1.7,<1.8' "$TORCH" "$TORCHVISION"

# Checks: pty-chi imports (with torchvision), LSQML and our keys are listed by headless ptychodus.
"$PY" - <<'EOF'
import torch, torchvision, ptychi  # noqa: F401
print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, '
      f'ptychi {ptychi.__version__ if hasattr(ptychi, "__version__") else "?"}, '
      f'cuda available: {torch.cuda.is_available()}')
EOF
echo "ok: $PY (use: $PY bench/compare.py --json --python $PY)"
