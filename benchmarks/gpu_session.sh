#!/usr/bin/env bash
# The two commands of a lent-GPU session (issue "On a CUDA GPU"), prepared so the device minutes go to measuring,
# not to typing. Each writes what comes back under $OUT (a handful of files: a run folder travels as one tar).
#
#   benchmarks/gpu_session.sh first           # <= 4 min: the CUDA tests, then the GPU training speed
#   benchmarks/gpu_session.sh second RATE     # <= 9 min: a WRN-40-2 base; RATE = its train images/s from `first`
#
# `second` trains the paper's recipe (`wrn`, 200 epochs, batch 128) when they fit in 7.5 minutes at RATE (22,300
# images/s: the issue's 20,000 would leave no time for compiling and evaluating), else as many epochs of `fast` as
# 7 minutes hold; it stops at 8.7 minutes whatever happens, and packs the run folder with its model file and
# metrics. On this machine: unpack it and `zoo add` the run folder.
# DEVICE=cpu COMPILE= EXTRA="--subset 500 --test-subset 200" try the commands on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder that comes back}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
COMPILE=${COMPILE---compile}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

case "${1:-}" in
first)
  # the CUDA tests: every path the CPU suite skips (bf16 autocast, data on the device, NCCL, compile)
  timeout 120 python -m pytest -m cuda -q -p no:cacheprovider > "$OUT/cuda-tests.txt" 2>&1 || true
  # one process: both networks, eager and compiled, the train and prune steps, with the bf16 matmul peak
  timeout 90 python benchmarks/train_speed.py --device "$DEVICE" --networks wrn-16-2,wrn-40-2 --modes eager,compiled \
    --steps train,prune --precisions bf16 --min-time 2 --rounds 3 --json > "$OUT/train_speed.json" 2> "$OUT/train_speed.err" || true
  # several small trainings at once: does one WRN-16-2 fill the GPU? four processes side by side, each its own rows
  for i in 0 1 2 3; do
    timeout 40 python benchmarks/train_speed.py --device "$DEVICE" --networks wrn-16-2 --modes eager --steps train \
      --precisions bf16 --min-time 10 --rounds 1 --json > "$OUT/train_speed_x4_$i.json" 2>/dev/null &
  done
  wait
  ;;
second)
  RATE=${2:?give the WRN-40-2 train images/s that the first command measured}
  if python -c "import sys; sys.exit(0 if 200 * 50000 / float('$RATE') <= 450 else 1)"; then
    RECIPE=(--recipe wrn --epochs 200)
  else
    EPOCHS=$(python -c "print(max(1, int(7 * 60 * float('$RATE') / 50000)))")
    RECIPE=(--recipe fast --epochs "$EPOCHS")
  fi
  mkdir -p runs
  # shellcheck disable=SC2086  # EXTRA and COMPILE hold flags or nothing
  timeout 520 archfamily train --spec wrn-40-2 "${RECIPE[@]}" --tta --precision bf16 --device "$DEVICE" $COMPILE \
    --seed 0 --out runs/wrn-40-2-gpu --resume $EXTRA > "$OUT/train.log" 2>&1 || echo "train exited $?" >> "$OUT/train.log"
  tar -C runs -cf "$OUT/wrn-40-2-gpu.tar" --exclude .checkpoints --exclude .lock wrn-40-2-gpu
  ;;
*)
  echo "usage: $0 first | second RATE" >&2
  exit 2
  ;;
esac
