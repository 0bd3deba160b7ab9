#!/usr/bin/env bash
# The README's test command: bootstrap the venv, then run pytest (extra args go to pytest).
#   ./run_tests.sh                 # everything but GPU tests (CI runs this)
#   ./run_tests.sh -m "not slow"   # the quick smoke path
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$root/.venv/bin/python" -m pytest "$@"
