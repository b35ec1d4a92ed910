#!/usr/bin/env bash
# In-domain check of test-time adaptation on real data (issue 16): each task's source-only row
# (the init's 150-step continuation in cardiac-dg / cardiac-dev) predicts its own *source*
# validation cases with and without TTA; TENT must not cost more than 0.01 mean Dice there.
# Not a benchmark suite, on purpose: it scores a finished benchmark's model on the source validation cases that
# model was selected on (a suite refuses such test cases). Each prediction + evaluation is one `segshift test`
# call (segshift.bench.pipeline, the benchmark's own), as source-like images (--target-domain no).
# Usage: scripts/tta_in_domain.sh BENCH_DIR OUT_DIR   (after `segshift benchmark cardiac-dg --out BENCH_DIR`)
set -euo pipefail
bench=${1:?benchmark folder}; out=${2:?output folder}
seg=${SEGSHIFT:-segshift}
mkdir -p "$out"
for task in acdc2bssfp bssfp2lge; do
  run="$bench/runs/$task/source-only/seed0/train"
  src=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sources'][0])" "$run/run.json")
  cases=$(python3 -c "import yaml,sys; print(','.join(yaml.safe_load(open(sys.argv[1]))['data']['val_cases']))" "$run/config.yaml")
  for tta in none tent flip; do
    $seg test "$run" "$src" --out "$out/$task-$tta" --cases "$cases" --tta "$tta" --target-domain no --overwrite
  done
done
for f in "$out"/*/evaluation/summary.json; do
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-3], round(s['summary']['overall']['dice']['mean'], 4))" "$f"
done
