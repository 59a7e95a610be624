#!/usr/bin/env bash
# The zoo's networks from this study (issue 25): a study run's weights are not kept in git (only its settings and
# figures), so the seed-0 networks whose weights this machine no longer holds are trained again here with their
# run's own command (`runs/NAME/run.json`'s, run in the study's folder, whose paths it names, into this folder's
# runs/NAME: a study folder holds only what a study writes), and every network goes into the zoo through
# `archfamily zoo add`, which measures it through timm on all 10,000 test images.
# Resumable. Two lanes of one thread each: OMP_NUM_THREADS=1 bash run.sh 1 & OMP_NUM_THREADS=1 bash run.sh 2
# (or name the runs: bash run.sh fitted-76k-s0 reduced-width-152k-s0); the second cycles: OMP_NUM_THREADS=1 bash run.sh cycles
set -euo pipefail
cd "$(dirname "$0")/../../cifar10-cpu-bf16"
Z=../experiments/cifar10-cpu-bf16-zoo/runs  # this folder's runs, from the study's folder
F=runs/prune-fisher-k2e25
retrain() {  # $1: a seed-0 run of the study
    local cmd
    [ -f $Z/$1/metrics.json ] && return 0  # trained
    cmd=$(python3 -c "import json,sys; c=json.load(open('runs/$1/run.json'))['provenance']['command']; \
c[c.index('--out') + 1] = '$Z/$1'; print(' '.join(c[1:]))")
    archfamily $cmd
}
add() {  # $1: run folder, $2: arm, $3: budget
    local name=wrn16_2_${2//-/_}_$3_fast2_e20
    archfamily zoo list | grep -q "^archfamily_$name\.c10 " && return 0
    local family=()
    [ "$2" = reduced-width ] || family=(--family $F)
    archfamily zoo add "$1" --name $name --rule $2 "${family[@]}"
}
second_cycle() {  # $1: zoo entry, $2: run name, $3: epochs, $4: new entry, $5: rule: a second one-cycle of fast2
    # from the entry's weights (`--initial-checkpoint`, a fresh optimizer and schedule at peak rate 0.1), for an
    # entry whose 20 epochs left it above 15%
    local w=../../zoo/weights/archfamily_$1.safetensors
    if [ ! -f $w ]; then  # the entry left the zoo once its second cycle was in: its weights are in git's history
        w=logs/archfamily_$1.safetensors
        mkdir -p logs && git show f13f62d:zoo/weights/archfamily_$1.safetensors > $w.part && mv $w.part $w
    fi
    [ -f $Z/$2/metrics.json ] || archfamily train --spec $w --recipe fast2 --initial-checkpoint $w --epochs $3 \
        --recipe-set lr=0.1 --tta --precision bf16 --seed 0 --out $Z/$2 --resume
    archfamily zoo list | grep -q "^archfamily_$4\.c10 " || archfamily zoo add $Z/$2 --name $4 --rule $5 --family $F
}
if [ "${1:-}" = cycles ]; then  # OMP_NUM_THREADS=1 bash run.sh cycles
    second_cycle wrn16_2_copycat_76k_fast2_e20 copycat-76k-s0-c40 40 wrn16_2_copycat_76k_fast2_e20c40 copycat
    exit 0
fi
case ${1:-all} in
    1) runs="reduced-width-76k-s0 bottleneck-76k-s0 pruned-scratch-76k-s0 copycat-76k-s0" ;;
    2) runs="fitted-76k-s0 reduced-width-152k-s0 bottleneck-152k-s0 pruned-scratch-152k-s0" ;;
    all) runs="reduced-width-76k-s0 bottleneck-76k-s0 pruned-scratch-76k-s0 copycat-76k-s0 fitted-76k-s0 reduced-width-152k-s0 bottleneck-152k-s0 pruned-scratch-152k-s0" ;;
    *) runs="$*" ;;  # the runs named
esac
for run in $runs; do
    retrain $run
    arm=${run%-*-s0}; budget=${run%-s0}; budget=${budget##*-}
    add $Z/$run $arm $budget
done
