#!/usr/bin/env bash
# The one command run on the GPU machine (see scripts/gpu/README.md):
#
#   scripts/gpu/job.sh [--minutes 7] [--compile auto|on|off] [--preset P] [--batch N] ...
#   scripts/gpu/job.sh --dry-run [--out DIR] [--carry DIR]     # the same code, tiny, on the CPU
#
# Puts the repository on PYTHONPATH (nothing is installed: the GPU image has torch,
# torchvision, OpenCV and numpy, none of our venv), then runs scripts/gpu/job.py, which trains,
# benchmarks and writes at most 8 files to --out (default $OUT).
# The dry run uses .venv's python when there is one and blocks the imports the GPU image lacks.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
for arg in "$@"; do
    if [ "$arg" = "--dry-run" ]; then
        export DEID_BLOCK_IMPORTS=${DEID_BLOCK_IMPORTS:-1}
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
        [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
    fi
done
if [ -z "${OUT:-}" ] && [[ " $* " != *" --out "* ]]; then
    echo "error: set OUT or pass --out DIR (an empty folder for the job's files)" >&2
    exit 1
fi
exec "$PY" scripts/gpu/job.py "$@"
