#!/usr/bin/env bash
# Creates .venv-triton: the environment the real tritonserver binary (from nvidia-pytriton) and its
# python-backend stub run in. Kept apart from .venv because pytriton and the stub need numpy < 2.
# Idempotent: does nothing when the environment already imports everything the local server needs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRITON_VENV:-$ROOT/.venv-triton}"
PYTHON="${TRITON_PYTHON:-python3.11}"
CHECK='import numpy, onnxruntime, pytriton, pathlib, sys
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
b = pathlib.Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
assert b.is_file(), b'

# Where the environment is, for `tailsynth serve --backend triton` started from any working folder
# (tailsynth.serve.triton reads it from the checkout the package is installed from).
record_location() { (cd "$VENV" && pwd) > "$ROOT/.venv-triton.location"; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  record_location
  echo "triton env ready: $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "nvidia-pytriton==0.7.0" "numpy<2" "onnxruntime==1.32.*" "pillow>=10"
"$VENV/bin/python" -c "$CHECK"
record_location
echo "triton env ready: $VENV"
