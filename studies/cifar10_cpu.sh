#!/usr/bin/env bash
# The CIFAR-10 study at CPU scale (RESULTS.md): every figure there comes from the archfamily commands below.
#
# Scale: WRN-16-2 base (692k params) on 10,000 training images (the quick preset), 6 epochs of the WRN
# schedule shortened for every network trained from scratch, errors on all 10,000 test images.
# Budgets 76k, 152k and 304k params are 11%, 22% and 44% of the base: the paper's 0.25M, 0.5M and 1M
# as fractions of WRN-40-2.
#
# Every step is resumable: run the script again after an interruption and it continues where it stopped.
# The study used the paper's WRN recipe, so every command pins `--recipe wrn` (the default is now `fast`);
# run folders made before that option existed do not resume under it: start a new STUDY folder.
# Trainings run two at a time on one thread each (LANES, THREADS); SEEDS and EXTRA_SEEDS say which seeds.
set -euo pipefail
S=${STUDY:-runs/study}
LANES=${LANES:-2}
THREADS=${THREADS:-1}
SEEDS=${SEEDS:-0}
EXTRA_SEEDS=${EXTRA_SEEDS:-1}   # second seed for the arms the four findings rest on
BUDGETS="76k 152k 304k 463k"
export OMP_NUM_THREADS=$THREADS
mkdir -p "$S/specs"

# 1. One base, pruned once with plain Fisher and once with cost-aware Fisher; pruned-and-tuned networks
#    saved (and measured on the whole test split) at each budget.
archfamily derive --preset quick --recipe wrn --batch-size 128 --out "$S/quick" --resume
for method in fisher fisher-cost; do
  archfamily derive --preset quick --recipe wrn --batch-size 128 --checkpoint "$S/quick/base.safetensors" --method $method --test-subset 10000 \
    --save-at 76k,152k,304k,463k --out "$S/$method" --resume &
done
wait

# 2. The spec of every arm at every budget.
spec() {  # spec ARM FAMILY BUDGET [scale options]
  local arm=$1 family=$2 budget=$3; shift 3
  [ -f "$S/specs/$arm-$budget.json" ] || archfamily scale --family "$S/$family" --params "$budget" "$@" \
    --out "$S/specs/$arm-$budget.json" > /dev/null
}
for b in $BUDGETS; do
  spec reduced-width fisher $b --rule reduced-width
  spec bottleneck fisher $b --rule bottleneck
  spec copycat-fisher fisher $b --rule copycat
  spec fitted-fisher fisher $b --rule fitted
  spec copycat-fisher-r8 fisher $b --rule copycat --round-to 8
  spec fitted-fisher-r8 fisher $b --rule fitted --round-to 8
  spec copycat-fisher-cost fisher-cost $b --rule copycat
  spec fitted-fisher-cost fisher-cost $b --rule fitted
done
spec reduced-depth fisher 304k --rule reduced-depth
n() { echo $(( $(echo "$1" | tr -d k) * 1000 )); }
for b in $BUDGETS; do  # the architecture pruning found, to be trained from scratch
  cp -n "$S/fisher/pruned-at-$(n $b).safetensors" "$S/specs/pruned-scratch-$b.safetensors"
done

# 3. Train every arm from scratch with one recipe, in the order of what the findings need most (a CPU
#    finishes what it can: RESULTS.md says which runs exist): the core arms at seed 0, the other family
#    variants at 304k, the core arms at the other seeds at the cheaper budgets, the other variants at 152k,
#    and so on. Within each, largest networks first so the lanes finish together.
jobs() {  # jobs SEEDS "BUDGETS" ARM...
  local seeds=$1 budgets=$2; shift 2
  for seed in $seeds; do for b in $(echo $budgets | tr ' ' '\n' | sort -rn); do for arm in "$@"; do
    for f in "$S/specs/$arm-$b".*; do
      [ -f "$f" ] && echo "archfamily train --spec $f --recipe wrn --epochs 6 --subset 10000 --seed $seed --out $S/train/$arm-$b-s$seed --resume"
    done
  done; done; done
}
CORE="reduced-width reduced-depth bottleneck pruned-scratch copycat-fisher fitted-fisher"
REST="copycat-fisher-r8 fitted-fisher-r8 copycat-fisher-cost fitted-fisher-cost"
{ jobs "$SEEDS" "$BUDGETS" $CORE
  jobs "$SEEDS" 304k $REST
  jobs "$EXTRA_SEEDS" "76k 152k" $CORE
  jobs "$SEEDS" 152k $REST
  jobs "$EXTRA_SEEDS" 304k $CORE
  jobs "$SEEDS" 76k $REST
  jobs "$EXTRA_SEEDS" 463k $CORE
  jobs "$SEEDS" 463k $REST
} | xargs -P "$LANES" -I{} sh -c '{} > /dev/null 2>&1 || echo "failed: {}"'

# 4. Speed of the same networks, with their measured errors (mean and spread over seeds).
trained=(--trained "pruned-tuned=$S/fisher/pruned-at-*.safetensors"
         --trained "pruned-tuned (cost)=$S/fisher-cost/pruned-at-*.safetensors")
for arm in $CORE $REST; do trained+=(--trained "$arm=$S/train/$arm-[0-9]*"); done
archfamily bench --family "$S/fisher" --params ${BUDGETS// /,} --threads 1,2 --batch 1,256 --formats channels_last \
  "${trained[@]}" --out "$S/bench"

# 5. Seed 0 of the family members and of the reduced baselines into the zoo, each measured through
#    timm.create_model on all 10,000 test images.
for b in $BUDGETS; do for arm in reduced-width reduced-depth bottleneck copycat-fisher fitted-fisher; do
  run="$S/train/$arm-$b-s0"
  [ -f "$run/metrics.json" ] && archfamily zoo add "$run" --name "wrn16_2_${arm//-/_}_$b" --family "$S/fisher" \
    --rule "${arm%-fisher}" --replace
done; done
