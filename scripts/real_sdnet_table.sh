#!/usr/bin/env bash
# liu2020 Table-1 rows on the real dev data (issue 6): U-Net+RA, FS SDNet, FS SDNet+RA, SS SDNet+RA, SS SDNet+RA+FA.
# Needs `make data` first. Not run by the issue-6 session (hours on 2 CPU cores; run it on a GPU or with time).
#   adaptation     : ACDC (labelled) -> MS-CMRSeg bSSFP (unlabelled target of the SS rows), test bSSFP patients 1-20
#   generalisation : the same models on MS-CMRSeg LGE (never seen in training), test the 5 labelled LGE cases
# The paper's RA range is 0.954-2.692 mm (M&Ms); ACDC spans 0.7-1.9 mm and bSSFP is 1.25 mm, LGE 0.73-0.76 mm,
# so the same range (around the 1.5 mm preprocessing) is used here. Target labels are read by `evaluate` only.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${S:-.venv/bin/segshift}
OUT=${OUT:-runs/sdnet}
STEPS=${STEPS:-3000}        # per run (sdnet-fa: PRETRAIN more on top)
PRETRAIN=${PRETRAIN:-3000}
RA="augment.resolution=[0.954,2.692]"
mkdir -p "$OUT"
common=(--no-progress --overwrite --set train.steps=$STEPS --set train.eval_every=250 --set train.log_every=50)

run() {  # name method [extra --set ...]
  local name=$1 method=$2; shift 2
  [ -f "$OUT/$name/summary.json" ] || $S train -m "$method" -s data/acdc -t data/mscmr_bssfp -o "$OUT/$name" "${common[@]}" "$@"
}
run unet_ra      source-only --set "$RA" --set train.batch_size=4 --set train.lr=0.001
run fs_sdnet     sdnet
run fs_sdnet_ra  sdnet    --set "$RA"
run ss_sdnet_ra  sdnet-ss --set "$RA"
run ss_sdnet_ra_fa sdnet-fa --set "$RA" --set method.pretrain_steps=$PRETRAIN

for name in unet_ra fs_sdnet fs_sdnet_ra ss_sdnet_ra ss_sdnet_ra_fa; do
  $S predict "$OUT/$name" data/mscmr_bssfp --out "$OUT/pred/${name}_bssfp" --overwrite
  $S evaluate "$OUT/pred/${name}_bssfp" data/mscmr_bssfp --out "$OUT/eval/${name}_bssfp"
  $S predict "$OUT/$name" data/mscmr_lge --cases 'patient(01|08|29|36|41)' --out "$OUT/pred/${name}_lge" --overwrite
  $S evaluate "$OUT/pred/${name}_lge" data/mscmr_lge --cases 'patient(01|08|29|36|41)' --out "$OUT/eval/${name}_lge"
done
echo "per-case and summary tables: $OUT/eval/*/"
