#!/usr/bin/env bash
# A real run of a timm CNN through archfamily (RESULTS.md, "A timm CNN's family"): timm's mobilenetv2_035,
# mobilenetv2_050 and mobilenetv2_075 trained from scratch on CIFAR-10 (its own 32x32 input, unchanged), a family
# derived by Fisher-pruning the trained mobilenetv2_050, and the family's copycat members at the parameter counts
# of mobilenetv2_035 and mobilenetv2_075, trained from scratch with the same recipe.
#
# Every network is built with output_stride=16: at timm's own stride of 32 a 32x32 image is a 1x1 map by the
# last stage, and mobilenetv2_050 trained so for 10 epochs of `fast` reached 85.75% error. The recipe is `fast`
# at a quarter of its learning rate (lr 0.05): at fast's 0.2 the network stayed near chance for 4 epochs
# (timm's init gives it logits with a loss of 7 at 10 classes); at 0.05 and 0.025 it learned alike.
#
# Every command resumes (--resume), so the script can be killed and run again. Two lanes of one thread each:
#   OMP_NUM_THREADS=1 bash run.sh lane1 & OMP_NUM_THREADS=1 bash run.sh lane2; bash run.sh bench
# (or `bash run.sh` for all of it in turn)
# ARCHFAMILY names the command (a frozen install, say) [archfamily].
set -euo pipefail
cd "$(dirname "$0")"
AF=${ARCHFAMILY:-archfamily}
KWARGS=(--model-kwargs output_stride=16)
RECIPE=(--recipe fast --recipe-set lr=0.05 --epochs 10 --precision bf16 --seed 0)

variant() {  # timm's own width-scaled network, from scratch
    $AF train --spec timm:$1 "${KWARGS[@]}" "${RECIPE[@]}" --out runs/$1 --resume
}

derive() {  # Fisher-prune the trained mobilenetv2_050 (8 channels every 10 fine-tuning steps) down to 140k params
    $AF derive --preset quick --base timm:mobilenetv2_050 "${KWARGS[@]}" --checkpoint runs/mobilenetv2_050/model.safetensors \
        --precision bf16 --seed 0 --subset 50000 --test-subset 10000 --prune-every 10 -k 8 --eval-every 25 \
        --until-params 140k --out runs/derive --resume
}

copycat() {  # the family's member at $1 params, from scratch
    until [ -f runs/derive/family.json ]; do sleep 30; done  # the other lane's derive
    mkdir -p specs
    [ -f specs/copycat-$1.json ] || $AF scale --family runs/derive --params $1 --rule copycat --out specs/copycat-$1.json
    $AF train --spec specs/copycat-$1.json "${RECIPE[@]}" --out runs/copycat-$1 --resume
}

bench() {  # batch-1 CPU latency of every trained network (1 thread, channels_last, eager, 5 interleaved rounds)
    $AF bench --family runs/derive --params 408938,700490,1368234 --threads 1 --batch 1 --formats channels_last \
        --rounds 5 --trained timm-width='runs/mobilenetv2_0[357][05]' --trained copycat='runs/copycat-*' --out bench
}

# 408,938 and 1,368,234: mobilenetv2_035's and mobilenetv2_075's parameters at 10 classes
case ${1:-all} in
    lane1) variant mobilenetv2_050; derive; copycat 1368234 ;;
    lane2) variant mobilenetv2_035; variant mobilenetv2_075; copycat 408938 ;;
    bench) bench ;;
    all) variant mobilenetv2_050; derive; variant mobilenetv2_035; variant mobilenetv2_075; copycat 408938; copycat 1368234
         bench ;;
    *) echo "usage: run.sh [lane1|lane2|bench|all]" >&2; exit 2 ;;
esac
