#!/usr/bin/env bash
# The two commands of a lent-GPU session (issue "On a CUDA GPU"), prepared so the device minutes go to measuring,
# not to typing. Each packs what it wrote as one tar under $OUT: first.tar, second.tar (the run folder inside).
#
#   benchmarks/gpu_session.sh first           # <= 4 min (40 + 45 + 2 x 65 + 25 s caps): CUDA tests, training speed
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
# everything goes into one folder packed as $OUT/<command>.tar on exit (a lent machine returns at most 8 files)
WORK=$(mktemp -d)
trap 'tar -C "$WORK" -cf "$OUT/${1:-none}.tar" .' EXIT
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
COMPILE=${COMPILE---compile}
nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1 || true

case "${1:-}" in
first)
  # the CUDA tests: every path the CPU suite skips (bf16 autocast, data on the device, Fisher sums, compress)
  timeout 40 python -m pytest -m cuda -q -p no:cacheprovider > "$WORK/cuda-tests.txt" 2>&1 || true
  # the train and prune steps in bf16, with the bf16 matmul peak: eager for both networks in one process, compiled
  # in one process per network, so a slow compile costs only its own rows (each process prints its rows at its end)
  timeout 45 python benchmarks/train_speed.py --device "$DEVICE" --networks wrn-16-2,wrn-40-2 --modes eager \
    --steps train,prune --precisions bf16 --min-time 2 --rounds 3 --json > "$WORK/train_speed_eager.json" \
    2> "$WORK/train_speed_eager.err" || true
  for net in wrn-16-2 wrn-40-2; do
    timeout 65 python benchmarks/train_speed.py --device "$DEVICE" --networks "$net" --modes compiled \
      --steps train,prune --precisions bf16 --min-time 2 --rounds 3 --json > "$WORK/train_speed_compiled_$net.json" \
      2> "$WORK/train_speed_compiled_$net.err" || true
  done
  # several small trainings at once: does one WRN-16-2 fill the GPU? four processes side by side, each its own rows
  for i in 0 1 2 3; do
    timeout 25 python benchmarks/train_speed.py --device "$DEVICE" --networks wrn-16-2 --modes eager --steps train \
      --precisions bf16 --min-time 6 --rounds 1 --json > "$WORK/train_speed_x4_$i.json" 2>/dev/null &
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
    --seed 0 --out runs/wrn-40-2-gpu --resume $EXTRA > "$WORK/train.log" 2>&1 || echo "train exited $?" >> "$WORK/train.log"
  tar -C runs -cf - --exclude .checkpoints --exclude .lock wrn-40-2-gpu | tar -C "$WORK" -xf -
  ;;
*)
  echo "usage: $0 first | second RATE" >&2
  exit 2
  ;;
esac
