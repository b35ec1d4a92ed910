#!/usr/bin/env bash
# Profile every method on the real bSSFP -> LGE task at its default config (segshift bench profile).
# usage: scripts/profile_all.sh OUTDIR ; then: .venv/bin/python scripts/profile_table.py OUTDIR
# Needs `make data`. About 8 min on 2 cores (AVX-512 BF16). Torch jobs are serialised with flock.
cd "$(dirname "$0")/.."
out=$1; mkdir -p $out
for row in "source-only|" "gin-ipa|" "adabn|" "adaptseg|" "advent|" "adanet|method.gfrm=false" "adanet|" "cyclegan|" "attent|" "unetgan|method.seg_steps=1" "sdnet|" "sdnet-ss|"; do
  m=${row%%|*}; s=${row#*|}; extra=(); [ -n "$s" ] && extra=(--set "$s")
  tag=$m${s:+_${s//[^a-z0-9]/}}
  LANG=C.UTF-8 flock /tmp/segshift-torch.lock .venv/bin/segshift bench profile -m $m -s data/mscmr_bssfp -t data/mscmr_lge --steps 8 --warmup 2 "${extra[@]}" --json $out/$tag.json > $out/$tag.txt 2>&1
  echo "$tag $(sed -n 3p $out/$tag.txt)"
done
