#!/usr/bin/env bash
# The "Your data" real run: timm's lcnet_100 at its native stride on CIFAR-10 brought to 64x64 pixels (the vendored
# JPEG copy; no other real dataset can be had on this machine), 10% of train/ held out as the validation split
# (--val-fraction 0.1) and test/ measured once at the end. Its family's copycat members against timm's own width
# variants lcnet_075 and lcnet_050 at their parameter counts, every network trained with the same recipe and data;
# then batch-1 CPU latency of the four from `archfamily bench`. Each step is skipped once its output exists, so
# the script resumes where it stopped (`--resume` continues an interrupted step).
set -euo pipefail
cd "$(dirname "$0")"
DATA=(--input-size 64 --val-fraction 0.1 --subset 10000 --test-subset 2000)
RECIPE=(--recipe fast3 --epochs 5)
step() { echo "== $(date -u +%H:%M:%S) $*"; }

if [ ! -f runs/derive/family.json ]; then
  step derive
  resume=(); [ -f runs/derive/run.json ] && resume=(--resume)
  archfamily derive --preset quick --base timm:lcnet_100 "${DATA[@]}" "${RECIPE[@]}" --prune-every 5 -k 32 \
    --eval-every 4 --until-params 450k --finetune-set lr=0.02 --out runs/derive "${resume[@]}"
fi
for variant in lcnet_075 lcnet_050; do
  params=$(python -c "import timm; m = timm.create_model('$variant', num_classes=10); print(sum(p.numel() for p in m.parameters()))")
  [ -f "runs/copycat-$variant.json" ] || archfamily scale --family runs/derive --params "$params" --out "runs/copycat-$variant.json"
  for arm in "copycat-$variant" "timm-$variant"; do
    spec="runs/$arm.json"; [ "$arm" = "timm-$variant" ] && spec="timm:$variant"
    if [ ! -f "runs/$arm/metrics.json" ]; then
      step "train $arm"
      resume=(); [ -f "runs/$arm/run.json" ] && resume=(--resume)
      archfamily train --spec "$spec" "${DATA[@]}" "${RECIPE[@]}" --out "runs/$arm" "${resume[@]}"
    fi
  done
done
step bench
archfamily bench --family runs/derive --threads 1 --batch 1 --formats channels_last --rounds 5 \
  --trained copycat-075='runs/copycat-lcnet_075' --trained timm-075='runs/timm-lcnet_075' \
  --trained copycat-050='runs/copycat-lcnet_050' --trained timm-050='runs/timm-lcnet_050' --out bench
step done
