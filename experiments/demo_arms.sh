#!/usr/bin/env bash
# Two fresh-run arms side by side, one torch thread each, for the same wall-clock budget with
# `hifi-tse demo`'s schedule (nominal 12000 steps, phase 2 from the half, six validations);
# then each arm's best checkpoint on the demo report's test draw (seed 7, 120 mixtures per
# kind of voice, wrong-reference check). Results: runs/<name>_eval_{real,synthetic}/.
#
#   experiments/demo_arms.sh MINUTES NAME_A "OVERRIDES_A" NAME_B "OVERRIDES_B"
#   experiments/demo_arms.sh 15 base "" share065 "--set mixing.synthetic_share=0.65"
set -u
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin/hifi-tse
DATA=${DATA:-data/demo}
minutes=$1
schedule="--set train.budget_minutes=$minutes --set train.steps=12000 \
  --set train.phase1_steps=6000 --set mixing.easy_steps=6000 \
  --set mixing.noisy_ref_ramp=[6000,12000] --set train.warmup_steps=1000 \
  --set train.val_interval=2000"
arm() {  # name, overrides (word-split on purpose)
  rm -rf "runs/$1"
  # shellcheck disable=SC2086
  "$BIN" train --config configs/demo.yaml --data "$DATA" --out "runs/$1" --threads 1 \
    $schedule $2 > "runs/$1.log" 2>&1
}
mkdir -p runs
arm "$2" "$3" &
arm "$4" "$5" &
wait
for name in "$2" "$4"; do
  for voices in real synthetic; do
    "$BIN" evaluate --checkpoint "runs/$name/checkpoint_best.pt" --data "$DATA" --split test \
      --voices "$voices" --seed 7 --examples 120 --wrong-reference --threads 2 \
      --out "runs/${name}_eval_$voices" > "runs/${name}_eval_$voices.log" 2>&1
  done
done
