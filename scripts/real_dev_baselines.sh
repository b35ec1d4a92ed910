#!/usr/bin/env bash
# Source-only and target-oracle baselines on the real dev tasks of ../shared/data/cardiac.
# Reproduces the figures of issue 3's closing note. Needs `make data` first. ~45 min on 2 CPU cores.
#   ACDC -> MS-CMRSeg bSSFP : source-only on ACDC; oracle on bSSFP patients 1-12 (val 13-15); test bSSFP 16-20 (and all 20 for source-only)
#   bSSFP -> LGE            : source-only on bSSFP 1-15 (val 16-20) = the time-to-accuracy run; oracle = leave-one-out over the 5 labelled LGE cases
# Not a benchmark suite, on purpose: it scores the bSSFP source-only run on its own *validation* cases (the in-domain
# reference of issue 3; a suite refuses test cases that were selected on) and ACDC source-only on all 20 bSSFP
# cases, some of them the oracle's training cases (a suite refuses those too), and it pools a leave-one-out oracle
# over five trainings. Each prediction + evaluation is one `segshift test` call (segshift.bench.pipeline, the
# benchmark's own): OUT/test/<name>/{predictions,evaluation}.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/segshift
OUT=${OUT:-runs/dev}
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
common=(--no-progress --overwrite --set train.steps=$STEPS --set train.eval_every=100 --set train.log_every=50)

# time-to-accuracy run: bSSFP 1-15 train, 16-20 validation
[ -f "$OUT/bssfp_src/summary.json" ] || $S train -m source-only -s data/mscmr_bssfp -o "$OUT/bssfp_src" "${common[@]}" --set "data.val_cases=patient(1[6-9]|20)"
# ACDC source-only (validation: 20% of ACDC patients)
[ -f "$OUT/acdc_src/summary.json" ] || $S train -m source-only -s data/acdc -o "$OUT/acdc_src" "${common[@]}"
# bSSFP oracle for ACDC -> bSSFP
[ -f "$OUT/bssfp_oracle/summary.json" ] || $S train -m target-oracle -s data/acdc -t data/mscmr_bssfp -o "$OUT/bssfp_oracle" "${common[@]}" \
  --set "data.train_cases=patient(0[1-9]|1[0-2])" --set "data.val_cases=patient1[3-5]"

ev() {  # run domain cases name
  $S test "$1" "$2" --cases "$3" --out "$OUT/test/$4" --overwrite
}
ev "$OUT/bssfp_src"    data/mscmr_bssfp 'patient(1[6-9]|20)' bssfp_src_on_bssfp16-20
ev "$OUT/acdc_src"     data/mscmr_bssfp 'patient(1[6-9]|20)' acdc_src_on_bssfp16-20
ev "$OUT/acdc_src"     data/mscmr_bssfp 'patient.*'          acdc_src_on_bssfp_all
ev "$OUT/bssfp_oracle" data/mscmr_bssfp 'patient(1[6-9]|20)' ORACLE_bssfp_on_bssfp16-20
ev "$OUT/bssfp_src"    data/mscmr_lge   'patient(01|08|29|36|41)' bssfp_src_on_lge
ev "$OUT/acdc_src"     data/mscmr_lge   'patient(01|08|29|36|41)' acdc_src_on_lge

# LGE oracle: leave one labelled LGE case out, train on the other four (no validation: final step); each fold
# predicts and scores its held-out case, and the five predictions are evaluated together (one `segshift evaluate`)
LOO_STEPS=${LOO_STEPS:-800}
rm -rf "$OUT/loo/all"
mkdir -p "$OUT/loo/all"
for c in 01 08 29 36 41; do
  run="$OUT/lge_oracle_$c"
  others=$(echo 01 08 29 36 41 | tr ' ' '\n' | grep -v "^$c$" | sed 's/^/patient/' | paste -sd, -)
  [ -f "$run/summary.json" ] || $S train -m target-oracle -s data/mscmr_bssfp -t data/mscmr_lge -o "$run" --no-progress --overwrite \
    --set train.steps=$LOO_STEPS --set train.log_every=50 --set "data.val_cases=[]" --set "data.train_cases=[$others]"
  $S test "$run" data/mscmr_lge --cases "patient$c" --out "$OUT/loo/fold$c" --overwrite
  cp "$OUT/loo/fold$c/predictions/patient$c.nii.gz" "$OUT/loo/all/"
done
$S evaluate "$OUT/loo/all" data/mscmr_lge --cases 'patient(01|08|29|36|41)' --out "$OUT/test/ORACLE_lge_loo/evaluation" --overwrite
python3 scripts/dev_table.py "$OUT/test"
