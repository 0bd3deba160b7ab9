#!/usr/bin/env bash
# Recipe of the starter checkpoint data/checkpoints/compact-128-lamcond_starter.pt (issue 9).
#
#   scripts/make_starter.sh            # CPU, as shipped (see data/checkpoints/MODEL_CARD.md)
#   DEVICE=cuda BATCH=32 STEPS=20000 RUN=runs/starter-gpu scripts/make_starter.sh   # on a GPU
#
# 1. align the colour CelebA crops and the NASA portraits into face caches (resumable);
# 2. train compact-128-lamcond (λ sampled per example, log-uniform in [LAM_LO, LAM_HI],
#    P(λ = 0) = 0.25) holding out every person of data/sample/portraits (the evaluation faces);
# 3. export fp16 weights with the default λ DEFAULT_LAM;
# 4. evaluate on the held-out faces: the λ dial (Fig. 9 style, landmark NME, Spearman ρ),
#    Table 3, and — with the shared LFW-a — Tables 4 and 5 with facenet-casia and sface.
# Needs the shared data (DEID_SHARED_DATA or ../shared/data). Every step writes new files only:
# an existing RUN folder is refused by `deid train` (pass RESUME=1 to continue it).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-6000}
BATCH=${BATCH:-8}
LR=${LR:-5e-4}
THREADS=${THREADS:-2}
LAM_LO=${LAM_LO:-1e-7}
LAM_HI=${LAM_HI:-2e-5}
DEFAULT_LAM=${DEFAULT_LAM:-2e-5}
RUN=${RUN:-runs/starter}
OUT=${OUT:-data/checkpoints/compact-128-lamcond_starter.pt}
SHARED=${DEID_SHARED_DATA:-../shared/data}
CACHE=${DEID_CACHE:-$HOME/.cache/deid}
[ -d "$SHARED/celeba-wild-256" ] || { echo "shared data not found at $SHARED (set DEID_SHARED_DATA)" >&2; exit 1; }
# shellcheck disable=SC1091
[ -n "${VIRTUAL_ENV:-}" ] || { scripts/bootstrap.sh >/dev/null && source .venv/bin/activate; }

deid prepare "$SHARED/celeba-wild-256" "$CACHE/faces/celeba-wild-256_s128_hog"
deid prepare "$SHARED/nasa-portraits" "$CACHE/faces/nasa-portraits_s128_hog"
deid train --preset compact-128-lamcond \
    --data "$CACHE/faces/celeba-wild-256_s128_hog" "$CACHE/faces/nasa-portraits_s128_hog" \
    --hold-out data/sample/portraits --out "$RUN" --steps "$STEPS" --batch "$BATCH" --lr "$LR" \
    --lam "$LAM_LO" "$LAM_HI" --device "$DEVICE" --threads "$THREADS" \
    --ckpt-every 250 --sample-every 500 ${RESUME:+--resume}
mkdir -p "$(dirname "$OUT")"
deid export "$RUN/checkpoint.pt" "$OUT" --lam "$DEFAULT_LAM"
EVAL=(--evaluator facenet-casia --evaluator sface --checkpoint "$OUT")
deid eval lambda --checkpoint "$OUT" --lams 0 1e-7 1e-6 5e-6 1e-5 2e-5 --max-images 24 \
    --evaluator dlib --evaluator sface --evaluator facenet-casia --name lambda_dial
deid eval table3 "${EVAL[@]}" --max-images 24 --name starter_table3
deid eval lfw "${EVAL[@]}" --per-fold 50 --name starter_table5_lfw
deid eval rank --evaluator sface --checkpoint "$OUT" --probe-identities 300 \
    --max-extra-identities 1000 --name starter_table4_rank_sface
deid eval rank --evaluator facenet-casia --checkpoint "$OUT" --probe-identities 300 \
    --max-extra-identities 1000 --name starter_table4_rank_facenet
# the card's evidence beside the weights (results/ itself is not committed)
CARD_DIR="$(dirname "$OUT")/eval"
mkdir -p "$CARD_DIR"
RES=${DEID_RESULTS:-results}
cp "$RES"/figures/lambda_dial.png "$RES"/figures/lambda_dial_distance.png "$CARD_DIR"/
for t in lambda_dial starter_table3 starter_table5_lfw starter_table4_rank_sface starter_table4_rank_facenet; do
    [ -f "$RES/tables/$t.md" ] && cp "$RES/tables/$t.md" "$CARD_DIR/"
done
echo "weights: $OUT ($(du -h "$OUT" | cut -f1)); evidence: $CARD_DIR — update MODEL_CARD.md with these numbers"
