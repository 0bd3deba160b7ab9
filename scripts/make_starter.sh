#!/usr/bin/env bash
# Recipe of the starter checkpoint (data/checkpoints/, see MODEL_CARD.md there).
#
#   scripts/make_starter.sh            # CPU, as shipped
#   DEVICE=cuda BATCH=32 STEPS=20000 RUN=runs/starter-gpu scripts/make_starter.sh   # on a GPU
#
# 1. align the colour CelebA crops and the NASA portraits into face caches (resumable);
# 2. train PRESET with the `deid` recipe (λ per example uniform on [0, 2e-5], P(λ = 0) = 0.25,
#    linear dial), warm-started from INIT when given, holding out every person of
#    data/sample/portraits (the evaluation faces);
# 3. export the EMA generator (fp16) with the default λ DEFAULT_LAM;
# 4. evaluate on the held-out faces: the λ dial at 5 even positions (identity distance,
#    landmark NME, naturalness), the naturalness table against blur and pixelation, Table 3,
#    and — with the shared LFW-a — Tables 4 and 5 with facenet-casia and sface.
# Needs the shared data (DEID_SHARED_DATA or ../shared/data). Every step writes new files only:
# an existing RUN folder is refused by `deid train` (pass RESUME=1 to continue it).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-2000}
BATCH=${BATCH:-8}
LR=${LR:-5e-4}
THREADS=${THREADS:-2}
PRESET=${PRESET:-compact-128w-lamcond}
RECIPE=${RECIPE:-deid}
INIT=${INIT:-}
DEFAULT_LAM=${DEFAULT_LAM:-2e-5}
RUN=${RUN:-runs/starter}
OUT=${OUT:-data/checkpoints/${PRESET}_starter.pt}
SHARED=${DEID_SHARED_DATA:-../shared/data}
CACHE=${DEID_CACHE:-$HOME/.cache/deid}
[ -d "$SHARED/celeba-wild-256" ] || { echo "shared data not found at $SHARED (set DEID_SHARED_DATA)" >&2; exit 1; }
# shellcheck disable=SC1091
[ -n "${VIRTUAL_ENV:-}" ] || { scripts/bootstrap.sh >/dev/null && source .venv/bin/activate; }

deid prepare "$SHARED/celeba-wild-256" "$CACHE/faces/celeba-wild-256_s128_hog"
deid prepare "$SHARED/nasa-portraits" "$CACHE/faces/nasa-portraits_s128_hog"
deid train --preset "$PRESET" --recipe "$RECIPE" \
    --data "$CACHE/faces/celeba-wild-256_s128_hog" "$CACHE/faces/nasa-portraits_s128_hog" \
    --hold-out data/sample/portraits --out "$RUN" --steps "$STEPS" --batch "$BATCH" --lr "$LR" \
    --device "$DEVICE" --threads "$THREADS" ${INIT:+--init "$INIT"} \
    --ckpt-every 100 --sample-every 200 ${RESUME:+--resume}
mkdir -p "$(dirname "$OUT")"
deid export "$RUN/checkpoint.pt" "$OUT" --lam "$DEFAULT_LAM"
EVAL=(--evaluator facenet-casia --evaluator sface --checkpoint "$OUT")
deid eval lambda --checkpoint "$OUT" --lams 0 5e-6 1e-5 1.5e-5 2e-5 --max-images 24 \
    --evaluator dlib --evaluator sface --evaluator facenet-casia --name lambda_dial
deid eval naturalness --checkpoint "$OUT" --max-images 24 --name naturalness
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
for t in lambda_dial naturalness starter_table3 starter_table5_lfw starter_table4_rank_sface starter_table4_rank_facenet; do
    [ -f "$RES/tables/$t.md" ] && cp "$RES/tables/$t.md" "$CARD_DIR/"
done
echo "weights: $OUT ($(du -h "$OUT" | cut -f1)); evidence: $CARD_DIR — update MODEL_CARD.md with these numbers"
