#!/usr/bin/env bash
# Issue 12's remaining pipeline, one resumable step after another; run it again after a kill
# and it continues where it stopped. Do not edit it while it runs (bash reads a script as it
# goes). From the repository root, after the README's setup:
#   mkdir -p /root/atamp_runs/mnist && cp -rn resume/mnist/pgd_at resume/mnist/pgd_at_amp /root/atamp_runs/mnist/
#   nohup bash resume/mnist/queue.sh >> /root/atamp_runs/mnist/queue.log 2>&1 &
# 1. finish both trainings side by side (each resumes after its last finished epoch), and
# 2. evaluate each best checkpoint as soon as its training ends, on all 10,000 test images
#    (natural, PGD-20, PGD-100, CW-inf, standard AutoAttack; resumes per attack and per
#    AutoAttack batch; about 2.6 h each on an idle machine, docs/bench/mnist/);
# 3. export each to the zoo with its card (best = chosen on the 5,000 held-out images);
# 4. compare our AutoAttack with the reference on the first 500 test images (only the
#    reference runs: ours is read from step 2) and record it on the entry and card.
set -euo pipefail
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/root/atamp_runs/mnist}
export ATAMP_TF_NPZ_DIR=${ATAMP_TF_NPZ_DIR:-../shared/data}
RUN_NAMES=(pgd_at_amp pgd_at)
NOTES="Trained on the first 55,000 MNIST training images (the last 5,000 held out to choose \
the checkpoint); the two MNIST entries (PGD-AT and AT-AMP, the same budget) trained side by \
side on one 2-core CPU machine over several sessions, so the wall time is a shared machine's."

training_running() {  # a training of this run directory already going (a queue started twice)
  pgrep -f -- "atamp_tf.train .*--out_dir=$1\$" > /dev/null
}

train_then_evaluate() {  # each run evaluates as soon as it has trained: the cores stay busy
  local run=$1 d=$RUNS/$1
  while training_running "$d"; do sleep 60; done
  $PY -m atamp_tf.train --flagfile=flags/mnist/$run.cfg --out_dir=$d >> $RUNS/$run.log 2>&1
  [ -f $d/eval/report.json ] || $PY -m atamp_tf.evaluate --model=$d --checkpoint=best \
    --npz_dir=$ATAMP_TF_NPZ_DIR --attacks=natural,pgd20,pgd100,cw_inf,autoattack \
    --batch_size=500 --output_dir=$d/eval >> $RUNS/$run.eval.log 2>&1
}

pids=()
for run in "${RUN_NAMES[@]}"; do
  train_then_evaluate $run &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done  # set -e: a failed step stops the queue

for run in "${RUN_NAMES[@]}"; do d=$RUNS/$run; name=mnist-linf-trades-small-cnn-${run//_/-}
  [ -f $d/exported ] || { $PY -m atamp_tf.export --run_dir=$d --checkpoint=best --name=$name \
    --compared_with=docs/zoo/mnist_linf_published.csv --train_flagfile=flags/mnist/$run.cfg \
    --notes="$NOTES" && touch $d/exported; }
  out=docs/eval/reference_parity/$name
  [ -f $out/parity.json ] || $PY -m atamp_tf.evaluate.reference_cli \
    --onnx=atamp_tf/zoo/models/$name.onnx --model=$d --npz_dir=$ATAMP_TF_NPZ_DIR \
    --num_examples=500 --ours_from=$d/eval --output_dir=$out
  $PY -m atamp_tf.export --add_parity=$out/parity.json --name=$name
done
echo "queue done: commit the zoo files, docs/eval/reference_parity/ and docs/runs/mnist/"
