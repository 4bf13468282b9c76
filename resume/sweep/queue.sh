#!/usr/bin/env bash
# Issue 11's remaining delta sweep (flags/sweep/), one resumable step after another; run it
# again after a kill and it continues where it stopped. Do not edit it while it runs (bash
# reads a script as it goes). From the repository root, after the README's setup:
#   mkdir -p /root/atamp_runs/sweep && cp -rn resume/sweep/cifar10_l2_* /root/atamp_runs/sweep/
#   nohup bash resume/sweep/queue.sh >> /root/atamp_runs/sweep/queue.log 2>&1 &
# 1. train the runs not yet trained, two side by side (a finished run is skipped; a killed
#    one resumes after its last finished epoch);
# 2. evaluate every run's best and last checkpoint on the first 1,000 CIFAR-10 test images
#    with natural, PGD-20, PGD-100 and CW-L2, and those of PGD-AT and of the AMP delta with
#    the highest per-epoch robust accuracy (summary.json's best, PGD-10 on the 1,000-image
#    test subset) with the standard AutoAttack as well (issue 11 allows the full AutoAttack
#    for these two only when the time is short; each evaluation resumes per attack and batch);
# 3. write the sweep's report (docs/sweep/sweep.md and sweep.png).
# PGD-AT's last checkpoint is evaluated first and alone: its time is issue 14's "ours now".
set -euo pipefail
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/root/atamp_runs/sweep}
export ATAMP_TF_NPZ_DIR=${ATAMP_TF_NPZ_DIR:-../shared/data}
AMP=(pgd_at_amp_d0.0125 pgd_at_amp_d0.025 pgd_at_amp_d0.05 pgd_at_amp_d0.1)
ALL=(pgd_at "${AMP[@]}" pgd_at_awp_g0.01)
BASIC=natural,pgd20,pgd100,cw_l2

train() {  # a finished run is skipped (its committed copy has no state/: train refuses it)
  grep -q '"complete": true' $RUNS/cifar10_l2_$1/summary.json 2>/dev/null && return 0
  $PY -m atamp_tf.train --flagfile=flags/sweep/cifar10_l2_$1.cfg \
    --out_dir=$RUNS/cifar10_l2_$1 >> $RUNS/$1.log 2>&1
}

evaluate() {  # run, checkpoint (best -> eval/, last -> eval_last/), attacks
  local d=$RUNS/cifar10_l2_$1 out=$RUNS/cifar10_l2_$1/eval
  [ "$2" = last ] && out=${out}_last
  [ -f $out/report.json ] || $PY -m atamp_tf.evaluate --model=$d --checkpoint=$2 \
    --npz_dir=$ATAMP_TF_NPZ_DIR --num_examples=1000 --batch_size=500 --attacks=$3 \
    --output_dir=$out >> $RUNS/$1.eval.log 2>&1
}

train pgd_at_amp_d0.1 & a=$!; train pgd_at_amp_d0.025 & b=$!; wait $a; wait $b
train pgd_at_amp_d0.0125 & a=$!; train pgd_at_awp_g0.01 & b=$!; wait $a; wait $b

best_amp=$($PY -c '
import json, sys
runs = sys.argv[2:]
acc = {r: json.load(open(f"{sys.argv[1]}/cifar10_l2_{r}/summary.json"))["best"]["test_robust_acc"]
       for r in runs}
print(max(runs, key=acc.get))' $RUNS "${AMP[@]}")
echo "the full AutoAttack for pgd_at and $best_amp"

# PGD-AT's last checkpoint first and alone: its AutoAttack time is "ours now" in issue 14's
# timing table (resume/autoattack_timing.sh)
evaluate pgd_at last $BASIC,autoattack
for run in "${ALL[@]}"; do
  attacks=$BASIC
  [ $run = pgd_at ] || [ $run = $best_amp ] && attacks=$BASIC,autoattack
  evaluate $run best $attacks & a=$!; evaluate $run last $attacks & b=$!; wait $a; wait $b
done

$PY -m atamp_tf.reproduction --output_dir=docs/sweep \
  --sweep_runs=$(printf "$RUNS/cifar10_l2_%s," "${ALL[@]}" | sed 's/,$//')
echo "queue done: bash resume/sweep/finish.sh (the runs' small files into docs/runs/sweep/, the report from them)"
