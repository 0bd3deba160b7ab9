#!/usr/bin/env bash
# Build .carry/ for the GPU job (see scripts/gpu/README.md), here, on the CPU:
#
#   scripts/gpu/pack.sh [--aligned-10k] [--init CKPT.pt|none] [--quality 90] [--replace]
#   scripts/gpu/pack.sh --tiny --carry DIR      # dry-run carry from the embedded sample only
#   scripts/gpu/pack.sh --check                 # only print what travels now (before the call)
#
# 1. prepares the 128-px face caches that are missing or incomplete (`deid prepare`,
#    resumable; waits while another `deid prepare` writes the same cache);
# 2. runs scripts/gpu/pack.py: face shards (held-out persons out, LFW never), held-out
#    sample faces, the dlib loss network as fp16 tensors, the weights to continue from;
# 3. prints the size of everything that travels and what to move aside when over.
# Needs the shared data (DEID_SHARED_DATA or ../shared/data) except with --tiny.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${DEID_SHARED_DATA:-../shared/data}
CACHE=${DEID_CACHE:-$HOME/.cache/deid}
# shellcheck disable=SC1091
[ -n "${VIRTUAL_ENV:-}" ] || { scripts/bootstrap.sh >/dev/null && source .venv/bin/activate; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

prepare() {   # prepare SRC DST [deid prepare options]: resumable, one writer at a time
    local src=$1 dst=$2
    shift 2
    [ -d "$src" ] || { echo "shared data not found: $src (set DEID_SHARED_DATA)" >&2; exit 1; }
    while pgrep -f "deid prepare .*$dst" >/dev/null; do
        echo "waiting: another 'deid prepare' is writing $dst"
        sleep 30
    done
    deid prepare "$src" "$dst" --size 128 "$@"
}

TINY=0
ALIGNED=0
for arg in "$@"; do
    [ "$arg" = "--tiny" ] || [ "$arg" = "--check" ] && TINY=1   # no caches needed
    [ "$arg" = "--aligned-10k" ] && ALIGNED=1
done
if [ $TINY = 0 ]; then
    # the caches of scripts/make_starter.sh (dlib HOG, as the starter was trained)
    prepare "$SHARED/celeba-wild-256" "$CACHE/faces/celeba-wild-256_s128_hog" --detector hog
    prepare "$SHARED/nasa-portraits" "$CACHE/faces/nasa-portraits_s128_hog" --detector hog
    # CelebA's aligned crops are 89×109: faces under HOG's 80 px, YuNet finds them
    if [ $ALIGNED = 1 ]; then
        prepare "$SHARED/celeba-aligned-10k" "$CACHE/faces/celeba-aligned-10k_s128_yunet" \
            --detector yunet
    fi
fi
exec python scripts/gpu/pack.py "$@"
