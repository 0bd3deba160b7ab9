#!/usr/bin/env bash
# The README's main command: bootstrap the venv, then execute notebooks/00..05 with papermill
# into results/executed/ and write results/REPORT.md.
#   ./run_all.sh                                  # smoke profile: embedded sample, CPU, <= 15 min
#   ./run_all.sh --profile paper --device cuda --data /path/to/datasets
#   ./run_all.sh --force                          # rerun notebooks whose outputs already exist
# Other options: --seed N, --results DIR, --only NAME... (see .venv/bin/python -m deid_core.notebook_runner -h)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
# Smoke profile = 2 CPU cores; respect a caller's setting.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$root/.venv/bin/python" -m deid_core.notebook_runner "$@"
