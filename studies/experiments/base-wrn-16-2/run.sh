#!/usr/bin/env bash
# Issue 25's base in a lower-error regime: WRN-16-2, 50 epochs of `fast2` (the default recipe of `train` then) in bf16
# on all 50,000 CIFAR-10 training images, errors on all 10,000 test images. Resumable: run it again and it
# continues from its last epoch. Then into the zoo (measured through timm on all 10,000 test images):
#   nice -n 19 studies/experiments/base-wrn-16-2/run.sh > studies/experiments/base-wrn-16-2/logs/log.txt 2>&1 &
#   archfamily zoo add studies/experiments/base-wrn-16-2/runs/wrn-16-2-e50 --name wrn16_2_fast2_e50
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p logs
archfamily train --spec wrn-16-2 --recipe fast2 --epochs 50 --tta --precision bf16 --seed 0 --out runs/wrn-16-2-e50 --resume
# A second cycle from those weights (`--initial-checkpoint`: a fresh optimizer and one-cycle schedule, its peak
# rate halved to 0.1), 60 epochs more, 110 in all; then `zoo add studies/experiments/base-wrn-16-2/runs/wrn-16-2-e50-c60`.
archfamily train --spec wrn-16-2 --recipe fast2 --initial-checkpoint ../../../zoo/weights/archfamily_wrn16_2_fast2_e50.safetensors \
  --epochs 60 --recipe-set lr=0.1 --tta --precision bf16 --seed 0 --out runs/wrn-16-2-e50-c60 --resume
# One cycle of 30 epochs with timm's Muon for the conv filters (`optimizer=muon` at lr 0.01, the ablation's
# 2.8-point gain at 5 epochs of WRN-16-1), on one thread beside other runs.
archfamily train --spec wrn-16-2 --recipe fast2 --epochs 30 --recipe-set optimizer=muon --recipe-set lr=0.01 --tta --precision bf16 \
  --seed 0 --out runs/wrn-16-2-muon-e30 --resume
# One cycle of 100 epochs of `fast2-muon` (the default recipe of `train` now: fast2 with timm's Muon for the conv
# filters at lr 0.02), alone on 2 threads; then `zoo add studies/experiments/base-wrn-16-2/runs/wrn-16-2-muon-e100`.
archfamily train --spec wrn-16-2 --recipe fast2-muon --epochs 100 --tta --precision bf16 --seed 0 --out runs/wrn-16-2-muon-e100 --resume
# Muon's weight decay is decoupled (the weights shrink by lr * weight_decay a step), so `fast2`'s 5e-4 is about
# none at lr 0.02: the 100-epoch run's conv filters grew to 43 times their SGD-trained size (median RMS 1.59 against
# 0.037), and its step relative to its weights fell to 0.25% at the peak rate against SGD's 9.5%. Two 50-epoch
# runs, one thread each side by side: weight decay 0.05 (an AdamW-sized value; weight_scale.py measured the second
# run's filters at median RMS 0.156 with 2.55% steps at the peak rate), and the same with airbench96's longer-budget augmentation, translate 4 and
# cutout 12. The better goes into the zoo: `zoo add studies/experiments/base-wrn-16-2/runs/wrn-16-2-muon-wd05-e50[-t4c12]`.
# The second is the recipe `fast3` since (the default of `train`): `--recipe fast3 --epochs 50` trains the same.
archfamily train --spec wrn-16-2 --recipe fast2-muon --recipe-set weight_decay=0.05 --epochs 50 --tta \
  --precision bf16 --seed 0 --out runs/wrn-16-2-muon-wd05-e50 --resume
archfamily train --spec wrn-16-2 --recipe fast2-muon --recipe-set weight_decay=0.05 --recipe-set translate=4 \
  --recipe-set cutout=12 --epochs 50 --tta --precision bf16 --seed 0 --out runs/wrn-16-2-muon-wd05-e50-t4c12 --resume
