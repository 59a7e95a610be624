#!/usr/bin/env bash
# The "Your data" real run: timm's lcnet_100 at its native stride on CIFAR-10 brought to 64x64 pixels (the vendored
# JPEG copy; no other real dataset can be had on this machine), 10% of train/ held out as the validation split
# (--val-fraction 0.1) and test/ measured once at the end. Its family's copycat members against timm's own width
# variants lcnet_075 and lcnet_050 at their parameter counts, every network trained with the same recipe and data
# at two seeds; then batch-1 CPU latency of the four architectures from `archfamily bench`. Each step is skipped once its output exists, so
# the script resumes where it stopped (`--resume` continues an interrupted step).
set -euo pipefail
cd "$(dirname "$0")"
DATA=(--input-size 64 --val-fraction 0.1 --subset 6000 --test-subset 1000)
RECIPE=(--recipe fast3 --epochs 4)
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
  for seed in 0 1; do
    for arm in "copycat-$variant" "timm-$variant"; do
      spec="runs/$arm.json"; [ "$arm" = "timm-$variant" ] && spec="timm:$variant"
      out="runs/$arm"; [ "$seed" = 0 ] || out="runs/$arm-s$seed"
      if [ ! -f "$out/metrics.json" ]; then
        step "train $out"
        resume=(); [ -f "$out/run.json" ] && resume=(--resume)
        archfamily train --spec "$spec" "${DATA[@]}" "${RECIPE[@]}" --seed "$seed" --out "$out" "${resume[@]}"
      fi
    done
  done
done
step bench
archfamily bench --family runs/derive --params 613k,1.09M --threads 1 --batch 1 --formats channels_last --rounds 5 \
  --trained copycat-075='runs/copycat-lcnet_075*/model.safetensors' \
  --trained timm-075='runs/timm-lcnet_075*/model.safetensors' \
  --trained copycat-050='runs/copycat-lcnet_050*/model.safetensors' \
  --trained timm-050='runs/timm-lcnet_050*/model.safetensors' --out bench
step done
