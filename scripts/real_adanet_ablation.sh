#!/usr/bin/env bash
# Wang et al. 2019 Table 1 on the real dev task MS-CMRSeg bSSFP -> LGE, plus adaptseg and advent.
# Reproduces the figures of issue 4's closing note. Needs `make data` first.
#   source  : bSSFP patients 1-15 train, 16-20 source validation (model selection)
#   target  : the 25 *unlabelled* LGE cases as the adaptation pool (images only)
#   test    : the 5 labelled LGE cases (01 08 29 36 41), never seen in training, labels read by evaluate only
# CPU budget reading of the paper's settings (see the closing note): STEPS steps of batch 16 at
# 1.5 mm / 160 px, segmenter Adam 1e-3 poly (the paper's SGD 0.01 did not learn within such
# budgets on the phantom), PatchGAN widths halved (32-64-128-128), everything else as in
# configs/methods/adanet.yaml.
# Usage: scripts/real_adanet_ablation.sh [ROW ...]   (default: every row); OUT, STEPS env vars.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/segshift
OUT=${OUT:-runs/adanet}
STEPS=${STEPS:-1000}
TEST='patient(01|08|29|36|41)'
POOL='patient(?!(01|08|29|36|41)$)\d+'
mkdir -p "$OUT/eval" "$OUT/pred"
common=(-s data/mscmr_bssfp -t data/mscmr_lge --no-progress --overwrite
  --set train.steps=$STEPS --set train.eval_every=100 --set train.log_every=25
  --set "data.val_cases=patient(1[6-9]|20)" --set "data.target_cases=$POOL"
  --set train.optimizer=adam --set train.lr=0.001 --set "method.d_channels=[32,64,128,128,1]")
declare -A ROWS=(
  [S2T]="-m adanet --set method.seg_lr_floor=0 --set data.preprocess.histmatch=false --set method.mda=false --set method.fda=false"
  [S2T+HM]="-m adanet --set method.seg_lr_floor=0 --set method.mda=false --set method.fda=false"
  [S2T+HM+MDA]="-m adanet --set method.seg_lr_floor=0 --set method.fda=false"
  [S2T+HM+MDA+FDA]="-m adanet --set method.seg_lr_floor=0 --set method.gfrm=false"
  [S2T+HM+MDA+FDA+GFRM]="-m adanet --set method.seg_lr_floor=0"
  [adaptseg]="-m adaptseg --set model.name=attention_unet"
  [advent]="-m advent --set model.name=attention_unet"
)
ORDER=(S2T S2T+HM S2T+HM+MDA S2T+HM+MDA+FDA S2T+HM+MDA+FDA+GFRM adaptseg advent)
[ $# -gt 0 ] && ORDER=("$@")
for row in "${ORDER[@]}"; do
  run="$OUT/$row"
  if [ ! -f "$run/summary.json" ]; then
    t0=$(date +%s)
    # shellcheck disable=SC2086
    $S train ${ROWS[$row]} -o "$run" "${common[@]}" 2>&1 | tee "$OUT/$row.log"
    echo "$row train_wall_s $(( $(date +%s) - t0 ))" >> "$OUT/wall.txt"
  fi
  t0=$(date +%s)
  $S predict "$run" data/mscmr_lge --cases "$TEST" --out "$OUT/pred/$row" --overwrite
  echo "$row predict_wall_s $(( $(date +%s) - t0 ))" >> "$OUT/wall.txt"
  $S evaluate "$OUT/pred/$row" data/mscmr_lge --cases "$TEST" --out "$OUT/eval/$row"
done
python3 scripts/dev_table.py "$OUT/eval" "$OUT/wall.txt"
