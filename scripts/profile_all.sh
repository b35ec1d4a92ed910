#!/usr/bin/env bash
# Profile every method on the real bSSFP -> LGE task at its default config (segshift bench profile).
# usage: scripts/profile_all.sh OUTDIR ; then: .venv/bin/python scripts/profile_table.py OUTDIR
# Needs `make data`. About 8 min on 2 cores (AVX-512 BF16). Torch jobs are serialised with flock.
cd "$(dirname "$0")/.."
out=$1; mkdir -p $out
# FULL: the alignment at full weight from the first step (no discriminator warm-up, no ramp), so the
# adversarial and translation rows time the step they take for most of a run (during the warm-up the
# segmenter's update is source-only's and cheaper); add FULL= to time a run's first steps instead.
FULL=${FULL-"method.d_warmup_steps=0 method.ramp_steps=0"}
for row in "source-only|" "gin-ipa|" "adabn|" "adaptseg|$FULL" "advent|$FULL" "adanet|method.gfrm=false $FULL" "adanet|$FULL" \
           "cyclegan|$FULL" "attent|$FULL" "unetgan|method.seg_steps=1 $FULL" "sdnet|" "sdnet-ss|"; do
  m=${row%%|*}; s=${row#*|}; extra=(); for kv in $s; do extra+=(--set "$kv"); done
  tag=$m; for kv in $s; do case $kv in method.d_warmup_steps=*|method.ramp_steps=*) ;; *) tag=${tag}_${kv//[^a-z0-9]/};; esac; done
  LANG=C.UTF-8 flock /tmp/segshift-torch.lock .venv/bin/segshift bench profile -m $m -s data/mscmr_bssfp -t data/mscmr_lge --steps 8 --warmup 2 "${extra[@]}" --json $out/$tag.json > $out/$tag.txt 2>&1
  echo "$tag $(sed -n 3p $out/$tag.txt)"
done
