#!/usr/bin/env bash
# Translation methods on the real dev task ACDC -> MS-CMRSeg bSSFP (issue 5). Needs `make data`.
# Adaptation pool: bSSFP patients 1-15 (unlabelled); test: bSSFP 16-20 (labels for evaluation only).
# CPU budget: 2 mm pixels, 112 px crops (224 mm), batch 8, STEPS steps (see docs/translation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/segshift
OUT=${OUT:-runs/translation}
STEPS=${STEPS:-800}
ROWS=${ROWS:-"source-only attent unetgan source-only-resunet cyclegan"}
mkdir -p "$OUT"
common=(--no-progress --overwrite --set train.steps=$STEPS --set train.eval_every=200 --set train.log_every=50 --set train.batch_size=8
        --set data.preprocess.target_spacing=2.0 --set "data.preprocess.crop_size=[112,112]" --set "data.target_cases=patient(0[1-9]|1[0-5])")
resunet=(--set model.name=resunet --set "model.kwargs={features: [16,32,64,128], encoder_blocks: [1,2,3,3]}")
test='patient(1[6-9]|20)'
for row in $ROWS; do
  run="$OUT/$row"
  case $row in
    source-only)         args=(-m source-only) ;;
    source-only-resunet) args=(-m source-only "${resunet[@]}") ;;
    cyclegan)            args=(-m cyclegan -t data/mscmr_bssfp) ;;
    attent)              args=(-m attent -t data/mscmr_bssfp) ;;
    unetgan)             args=(-m unetgan -t data/mscmr_bssfp "${resunet[@]}" --set method.seg_steps=$STEPS --set method.gan_steps=$((STEPS * 3 / 4))) ;;
  esac
  if [ ! -f "$run/summary.json" ]; then
    start=$(date +%s)
    $S train -s data/acdc -o "$run" "${common[@]}" "${args[@]}"
    echo "$row train_wall_s $(( $(date +%s) - start ))" >> "$OUT/wall.txt"
  fi
  $S predict "$run" data/mscmr_bssfp --cases "$test" --out "$OUT/pred/$row" --overwrite
  $S evaluate "$OUT/pred/$row" data/mscmr_bssfp --cases "$test" --out "$OUT/eval/$row"
done
python3 scripts/dev_table.py "$OUT/eval" "$OUT/wall.txt"
