#!/usr/bin/env bash
# A real run of a timm CNN through archfamily (RESULTS.md, "A timm CNN's family"): derive a family from timm's
# mobilenetv2_050 on CIFAR-10 (its own 32x32 input, unchanged), then train from scratch, with the same recipe,
# timm's own width-scaled variants (mobilenetv2_035, mobilenetv2_075) and the family's copycat members at their
# parameter counts. Every command resumes (--resume), so the script can be killed and run again.
# Usage: ARCHFAMILY=archfamily bash run.sh   (from this folder; 1 thread: OMP_NUM_THREADS=1)
set -euo pipefail
AF=${ARCHFAMILY:-archfamily}
COMMON=(--recipe fast --epochs 10 --precision bf16 --seed 0)
$AF derive --preset quick --base timm:mobilenetv2_050 "${COMMON[@]}" --batch-size 128 --subset 50000 \
    --test-subset 10000 --prune-every 10 -k 8 --eval-every 25 --until-params 140k --out runs/derive --resume
mkdir -p specs
for n in mobilenetv2_035 mobilenetv2_050 mobilenetv2_075; do
    $AF train --spec timm:$n "${COMMON[@]}" --out runs/$n --resume
done
for budget in 408938 1368234; do  # mobilenetv2_035's and mobilenetv2_075's parameters at 10 classes
    [ -f specs/copycat-$budget.json ] || $AF scale --family runs/derive --params $budget --rule copycat --out specs/copycat-$budget.json
    $AF train --spec specs/copycat-$budget.json "${COMMON[@]}" --out runs/copycat-$budget --resume
done
