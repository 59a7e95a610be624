#!/usr/bin/env bash
# A real run of a timm CNN through archfamily (RESULTS.md, "A timm CNN's family"): derive a family from timm's
# mobilenetv2_050 on CIFAR-10 (its own 32x32 input, unchanged), then train from scratch, with the same recipe,
# timm's own width-scaled variants (mobilenetv2_035, mobilenetv2_050, mobilenetv2_075) and the family's copycat
# members at their parameter counts. Every network is built with output_stride=16: at timm's own stride of 32 a
# 32x32 image is a 1x1 map by the last stage, and mobilenetv2_050 trained that way for 10 epochs reached 85.75% error.
# Every command resumes (--resume), so the script can be killed and run again.
# Usage: ARCHFAMILY=archfamily bash run.sh [derive|variants|copycat]   (from this folder; all three by default;
# 1 thread each: OMP_NUM_THREADS=1; `variants` can run beside `derive`)
set -euo pipefail
AF=${ARCHFAMILY:-archfamily}
COMMON=(--recipe fast --epochs 10 --precision bf16 --seed 0 --model-kwargs output_stride=16)
STEP=${1:-all}
if [[ $STEP == all || $STEP == derive ]]; then
$AF derive --preset quick --base timm:mobilenetv2_050 "${COMMON[@]}" --batch-size 128 --subset 50000 \
    --test-subset 10000 --prune-every 10 -k 8 --eval-every 25 --until-params 140k --out runs/derive --resume
fi
if [[ $STEP == all || $STEP == variants ]]; then
for n in mobilenetv2_035 mobilenetv2_050 mobilenetv2_075; do
    $AF train --spec timm:$n "${COMMON[@]}" --out runs/$n --resume
done
fi
if [[ $STEP == all || $STEP == copycat ]]; then
mkdir -p specs
for budget in 408938 1368234; do  # mobilenetv2_035's and mobilenetv2_075's parameters at 10 classes
    [ -f specs/copycat-$budget.json ] || $AF scale --family runs/derive --params $budget --rule copycat --out specs/copycat-$budget.json
    $AF train --spec specs/copycat-$budget.json "${COMMON[@]}" --out runs/copycat-$budget --resume
done
fi
