#!/usr/bin/env bash
# Issue 44's real run: a latency-targeted family of timm's lcnet_100 on CIFAR-10 brought to 64x64 pixels, the
# same base, data and recipe as RESULTS.md's "Your data" (../your-data-lcnet/run.sh, run first if its outputs are
# missing). Two latency budgets on this CPU (1 thread, batch 1, eager, channels_last): the measured latencies of
# timm's own width variants lcnet_050 and lcnet_075. At each budget three networks, each trained from scratch with
# the same recipe and data at seeds 0 and 1:
#   latency  the copycat member of the family Fisher-pruned against the latency model's per-channel cost (cpu:1)
#   params   the copycat member, at the same predicted latency, of "Your data"'s family (Fisher-pruned against
#            parameters, from the same trained base with the same pruning settings)
#   timm     timm's own width variant ("Your data"'s runs, trained with this script's DATA and RECIPE)
# then every trained network timed side by side in eager PyTorch and ONNX Runtime (`archfamily bench --trained`).
# Each step is skipped once its output exists and interrupted steps resume, so the script can be killed and run
# again. ARCHFAMILY names the command [archfamily].
set -euo pipefail
cd "$(dirname "$0")"
AF=${ARCHFAMILY:-archfamily}
DATA=(--input-size 64 --val-fraction 0.1 --subset 6000 --test-subset 1000)
RECIPE=(--recipe fast3 --epochs 4)
YOURS=../your-data-lcnet/runs
step() { echo "== $(date -u +%H:%M:%S) $*"; }
resume() { [ -f "$1/run.json" ] && echo --resume || true; }

[ -f $YOURS/timm-lcnet_075-s1/metrics.json ] || bash ../your-data-lcnet/run.sh
if [ ! -f runs/derive-latency/family.json ]; then
    step "derive runs/derive-latency"
    $AF derive --preset quick --base timm:lcnet_100 "${DATA[@]}" "${RECIPE[@]}" --checkpoint $YOURS/derive/base.safetensors \
        --method fisher-cost --cost latency --on cpu:1 --prune-every 5 -k 32 --eval-every 4 --until-params 450k \
        --finetune-set lr=0.02 --out runs/derive-latency $(resume runs/derive-latency)
fi

mkdir -p specs
[ -f specs/budgets.json ] || { step "time timm's width variants"; python budgets.py > specs/budgets.part && mv specs/budgets.part specs/budgets.json; }
for variant in lcnet_050 lcnet_075; do
    ms=$(python -c "import json; print(json.load(open('specs/budgets.json'))['$variant'])")
    [ -f specs/latency-$variant.json ] || $AF scale --family runs/derive-latency --latency-ms "$ms" --on cpu:1 --rule copycat --out specs/latency-$variant.json
    [ -f specs/params-$variant.json ] || $AF scale --family $YOURS/derive --latency-ms "$ms" --on cpu:1 --rule copycat --out specs/params-$variant.json
    for seed in 0 1; do
        for arm in latency params; do
            out=runs/$arm-$variant-s$seed
            [ -f "$out/metrics.json" ] && continue
            step "train $out"
            $AF train --spec specs/$arm-$variant.json "${DATA[@]}" "${RECIPE[@]}" --seed "$seed" --out "$out" $(resume "$out")
        done
    done
done
step bench
$AF bench --family runs/derive-latency --params 1M --threads 1 --batch 1 --formats channels_last --rounds 11 \
    --runtime eager,onnxruntime \
    --trained latency-050='runs/latency-lcnet_050-s*' --trained params-050='runs/params-lcnet_050-s*' \
    --trained timm-050="$YOURS/timm-lcnet_050*" --trained latency-075='runs/latency-lcnet_075-s*' \
    --trained params-075='runs/params-lcnet_075-s*' --trained timm-075="$YOURS/timm-lcnet_075*" --out bench
step done
