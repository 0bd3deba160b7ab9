#!/usr/bin/env bash
# Recipe of the default model (data/checkpoints/, see MODEL_CARD.md there): its last stage,
# and the evaluations behind its card.
#
#   INIT=runs/starter-w4/checkpoint.pt scripts/make_starter.sh     # CPU, as shipped (last stage: w7)
#   SKIP_TRAIN=1 RUN=runs/starter-w7 scripts/make_starter.sh        # export + evaluate a run
#   DEVICE=cuda BATCH=32 STEPS=20000 RUN=runs/starter-gpu scripts/make_starter.sh   # on a GPU
#
# 1. align the colour CelebA crops and the NASA portraits into face caches (resumable);
# 2. train PRESET with the `deid` recipe and OPTIONS (default: the warp head of the shipped
#    model: a 5-px flow on an 8² lattice whose bound follows the dial, a ±0.25 luma change on
#    a 16² lattice), warm-started from INIT when given, holding out every person of
#    data/sample/portraits (the evaluation faces); skipped with SKIP_TRAIN=1;
# 3. export the EMA generator (fp16) with the default λ DEFAULT_LAM;
# 4. evaluate on the held-out faces and one frame of each shared video: the λ dial at 5 even
#    positions (identity distance, landmark NME; source | outputs grids), the gates of
#    `deid eval gates`, Table 3, and — with the shared LFW-a — Tables 4 and 5 with
#    facenet-casia and sface; the identity check's rate; `deid audit` of the sample clip.
# The shipped model's earlier stages (the encoder and decoder it warm-starts from) are in
# MODEL_CARD.md. Needs the shared data (DEID_SHARED_DATA or ../shared/data). Every step writes
# new files only: an existing RUN folder is refused by `deid train` (RESUME=1 continues it).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-900}
BATCH=${BATCH:-8}
LR=${LR:-1e-4}
THREADS=${THREADS:-2}
PRESET=${PRESET:-compact-128w-lamcond}
RECIPE=${RECIPE:-deid}
OPTIONS=${OPTIONS:-repeller_weight=32 margin_max=1.0 floor_full_at=1.0 dial_gamma=1.5 flow_px=5 flow_grid=8 flow_dial=1 flow_luma=0.25 luma_grid=16 detail_sigma=0 curriculum=0}
INIT=${INIT:-}
DEFAULT_LAM=${DEFAULT_LAM:-2e-5}
RUN=${RUN:-runs/starter}
OUT=${OUT:-data/checkpoints/compact-128w-warp_starter.pt}
SHARED=${DEID_SHARED_DATA:-../shared/data}
CACHE=${DEID_CACHE:-$HOME/.cache/deid}
RES=${DEID_RESULTS:-results}
[ -d "$SHARED/celeba-wild-256" ] || { echo "shared data not found at $SHARED (set DEID_SHARED_DATA)" >&2; exit 1; }
# shellcheck disable=SC1091
[ -n "${VIRTUAL_ENV:-}" ] || { scripts/bootstrap.sh >/dev/null && source .venv/bin/activate; }

if [ -z "${SKIP_TRAIN:-}" ]; then
    deid prepare "$SHARED/celeba-wild-256" "$CACHE/faces/celeba-wild-256_s128_hog"
    deid prepare "$SHARED/nasa-portraits" "$CACHE/faces/nasa-portraits_s128_hog"
    opts=()
    for o in $OPTIONS; do opts+=(--option "$o"); done
    deid train --preset "$PRESET" --recipe "$RECIPE" "${opts[@]}" \
        --data "$CACHE/faces/celeba-wild-256_s128_hog" "$CACHE/faces/nasa-portraits_s128_hog" \
        --hold-out data/sample/portraits --out "$RUN" --steps "$STEPS" --batch "$BATCH" --lr "$LR" \
        --device "$DEVICE" --threads "$THREADS" ${INIT:+--init "$INIT"} \
        --ckpt-every 100 --sample-every 300 ${RESUME:+--resume}
fi
mkdir -p "$(dirname "$OUT")"
deid export "$RUN/checkpoint.pt" "$OUT" --lam "$DEFAULT_LAM"
EVAL=(--evaluator facenet-casia --evaluator sface --checkpoint "$OUT")
DIAL=(--lams 0 5e-6 1e-5 1.5e-5 2e-5 --evaluator dlib --evaluator sface --evaluator facenet-casia)
python scripts/video_frames.py --videos "$SHARED/videos" --out "$RES/video_frames"
deid eval lambda --checkpoint "$OUT" "${DIAL[@]}" --max-images 24 --name lambda_dial
deid eval lambda --checkpoint "$OUT" "${DIAL[@]}" --images "$RES/video_frames" --max-images 12 \
    --grid-rows 12 --name dial_videos
deid eval gates --checkpoint "$OUT" --lam "$DEFAULT_LAM" --wild "$RES/video_frames" --name gates_starter
deid eval table3 "${EVAL[@]}" --max-images 24 --name starter_table3
deid eval lfw "${EVAL[@]}" --per-fold 50 --name starter_table5_lfw
deid eval rank --evaluator sface --checkpoint "$OUT" --probe-identities 300 \
    --max-extra-identities 1000 --name starter_table4_rank_sface
deid eval rank --evaluator facenet-casia --checkpoint "$OUT" --probe-identities 300 \
    --max-extra-identities 1000 --name starter_table4_rank_facenet
python scripts/identity_check_rate.py --checkpoint "$OUT" --wild "$RES/video_frames"
CLIP=$(mktemp -d)/clip.mp4
deid video data/sample/clip/nasa_clip.mp4 "$CLIP" --checkpoint "$OUT" --no-check
deid audit data/sample/clip/nasa_clip.mp4 "$CLIP" --json "$RES/tables/starter_clip_audit.json" || true
# the card's evidence beside the weights (results/ itself is not committed)
CARD_DIR="$(dirname "$OUT")/eval"
mkdir -p "$CARD_DIR"
cp "$RES"/figures/lambda_dial_distance.png "$CARD_DIR"/
for f in lambda_dial dial_videos; do      # the grids as JPEG: every tracked MiB travels to a GPU
    python -c "import cv2, sys; cv2.imwrite(sys.argv[2], cv2.imread(sys.argv[1]), [cv2.IMWRITE_JPEG_QUALITY, 88])" \
        "$RES/figures/$f.png" "$CARD_DIR/$f.jpg"
done
for t in lambda_dial dial_videos gates_starter gates_starter_naturalness gates_starter_dial \
         gates_starter_wild starter_table3 starter_table5_lfw starter_table4_rank_sface \
         starter_table4_rank_facenet identity_check_rate; do
    [ -f "$RES/tables/$t.md" ] && cp "$RES/tables/$t.md" "$CARD_DIR/"
done
cp "$RES/tables/starter_clip_audit.json" "$CARD_DIR/"
echo "weights: $OUT ($(du -h "$OUT" | cut -f1)); evidence: $CARD_DIR — update MODEL_CARD.md with these numbers"
