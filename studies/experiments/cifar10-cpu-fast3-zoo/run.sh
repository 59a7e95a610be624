#!/usr/bin/env bash
# The zoo's networks from studies/cifar10-cpu-fast3 (issue 25): every seed-0 network the study trained from
# scratch that is at most 15% test error goes into the zoo through `archfamily zoo add`, which measures it through
# timm on all 10,000 test images (float32). The study committed each network's model.safetensors while it ran (they
# left the repository once in the zoo: restore them from git's history to run this again), so nothing is
# trained again here, except where a session ended before a network's weights were committed: such a run is
# trained again with the study's own command into this folder's runs/ (fitted-152k-s0, on a different CPU, so its
# error is its own), which is read when the study's folder holds no weights:
#   (cd studies/experiments/cifar10-cpu-fast3-zoo && archfamily train --spec ../../cifar10-cpu-fast3/specs/fitted-152k.json \
#     --recipe fast3 --epochs 20 --precision bf16 --seed 0 --out runs/fitted-152k-s0 --resume)
# At 76k the study's networks are above 15%, so the zoo's 76k entry is the best 76k arm, bottleneck, trained 60
# epochs in one cycle, then added by hand:
#   (cd studies/experiments/cifar10-cpu-fast3-zoo && archfamily train --spec ../../cifar10-cpu-fast3/specs/bottleneck-76k.json \
#     --recipe fast3 --epochs 60 --precision bf16 --seed 0 --out runs/bottleneck-76k-e60-s0 --resume)
#   archfamily zoo add studies/experiments/cifar10-cpu-fast3-zoo/runs/bottleneck-76k-e60-s0 --name wrn16_2_bottleneck_76k_fast3_e60 --rule bottleneck
# Entries already in the zoo are skipped, so this runs again as the study lands more runs:
#   bash studies/experiments/cifar10-cpu-fast3-zoo/run.sh            # every finished seed-0 run
#   bash studies/experiments/cifar10-cpu-fast3-zoo/run.sh copycat-76k-s0 fitted-152k-s0
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository: the manifest records the paths given, so they are the repository's
S=studies/cifar10-cpu-fast3
F=$S/runs/prune-fisher-k2e25
LIMIT=15  # percent: the zoo holds nothing worse
if [ $# -gt 0 ]; then runs="$*"; else runs=$(cd $S/runs && ls -d *-s0 2>/dev/null || true); fi
zoo=$(archfamily zoo list)  # read once: `zoo list | grep -q` under pipefail fails when grep stops reading early
for run in $runs; do
    src=$S/runs/$run
    [ -f $src/model.safetensors ] || src=studies/experiments/cifar10-cpu-fast3-zoo/runs/$run  # trained again (above)
    [ -f $src/metrics.json ] && [ -f $src/model.safetensors ] || continue  # unfinished, or pruned-tuned (the pruning run holds its network)
    error=$(python3 -c "import json; print(json.load(open('$src/metrics.json'))['test_error'])")
    if python3 -c "import sys; sys.exit(not $error > $LIMIT)"; then
        echo "$run: $error% is above $LIMIT%, left out"; continue
    fi
    arm=${run%-*-s0}; budget=${run%-s0}; budget=${budget##*-}
    name=wrn16_2_${arm//-/_}_${budget}_fast3_e20
    grep -q "^archfamily_$name\.c10 " <<<"$zoo" && continue
    family=()
    [ "$arm" = reduced-width ] || [ "$arm" = bottleneck ] || family=(--family $F)
    archfamily zoo add $src --name $name --rule $arm "${family[@]}"
done
