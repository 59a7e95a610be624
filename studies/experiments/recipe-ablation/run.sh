#!/usr/bin/env bash
# The bf16 parity check and the recipe ablation of issue 25: WRN-16-1, 5 epochs of the recipe each row names (`fast`,
# or `fast2` = `fast` with translate=2, whose baseline is the translate-2 row) on all 50,000
# CIFAR-10 training images, errors on all 10,000 test images, seeds 0 and 1, one change at a time.
# Resumable: run it again and every finished run is skipped, a partial one continues (`--resume`).
#   nice -n 19 studies/experiments/recipe-ablation/run.sh > studies/experiments/recipe-ablation/log.txt 2>&1 &
set -uo pipefail
cd "$(dirname "$0")"
EPOCHS=5
SEEDS=${SEEDS:-0 1}
row() {  # row NAME ARGS...: one `archfamily train` per seed, of $EPOCHS epochs
  local name=$1; shift
  for seed in $SEEDS; do
    [ -f "runs/$name-s$seed/metrics.json" ] && continue
    echo "== $name seed $seed: archfamily train --spec wrn-16-1 --epochs $EPOCHS --tta $* --seed $seed"
    archfamily train --spec wrn-16-1 --epochs $EPOCHS --tta "$@" --seed "$seed" --out "runs/$name-s$seed" --resume \
      || echo "== $name seed $seed failed"
  done
}
row fp32 --precision fp32 --recipe fast
row bf16 --precision bf16 --recipe fast
row flip-alternating --precision bf16 --recipe fast --recipe-set flip=alternating
row ema --precision bf16 --recipe fast --ema 0.99
row translate-2 --precision bf16 --recipe fast --recipe-set translate=2
row lookahead --precision bf16 --recipe fast --recipe-set lookahead_k=5
# (ran on `fast2`, the default of `train` by then: compare with translate-2)
row batch-512 --precision bf16 --recipe fast2 --batch-size 512
# airbench's larger rate for norm weights and biases, on `fast2` (= `fast` with translate=2: compare with translate-2)
row norm-bias-lr-4 --precision bf16 --recipe fast2 --recipe-set norm_bias_lr=4
row norm-bias-lr-16 --precision bf16 --recipe fast2 --recipe-set norm_bias_lr=16
# timm's Muon for the conv filters, AdamW for the rest (`optimizer=muon`; its rate is AdamW-sized), on `fast2`
row muon-lr-0.01 --precision bf16 --recipe fast2 --recipe-set optimizer=muon --recipe-set lr=0.01
row muon-lr-0.005 --precision bf16 --recipe fast2 --recipe-set optimizer=muon --recipe-set lr=0.005
row muon-lr-0.02 --precision bf16 --recipe fast2 --recipe-set optimizer=muon --recipe-set lr=0.02
# At a longer budget, 20 epochs: does translate=2, chosen at 5 epochs, still beat the crop's usual 4 pixels once
# the network fits its training set (the 100-epoch Muon base ended at the label-smoothed loss's floor)? Two lanes
# of one thread: OMP_NUM_THREADS=1 SEEDS=0 run.sh & OMP_NUM_THREADS=1 SEEDS=1 run.sh
EPOCHS=20
row e20-fast2-muon --precision bf16 --recipe fast2-muon
row e20-translate-4 --precision bf16 --recipe fast2-muon --recipe-set translate=4
