#!/usr/bin/env bash
# After queue.sh: the MNIST runs' small files into docs/runs/mnist/<run>/ (what the zoo entries
# and docs/runs/mnist/comparison.md are made from) and the comparison itself (ours beside the
# published models, AT-AMP paired against PGD-AT on the same 10,000 test images).
# From the repository root: bash resume/mnist/finish.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/root/atamp_runs/mnist}
for run in pgd_at pgd_at_amp; do
  d=$RUNS/$run out=docs/runs/mnist/$run
  [ -f $d/eval/report.json ] || { echo "$run: $d/eval/report.json missing: run queue.sh first"; exit 1; }
  mkdir -p $out/eval
  cp $d/flags.cfg $d/metrics.csv $d/run_config.json $d/summary.json $out/
  cp -r $d/plots $out/
  cp $d/eval/report.json $d/eval/report.md $d/eval/leaderboard.json $d/eval/per_example.npz \
    $out/eval/
done
$PY -m atamp_tf.reproduction --compare_runs=docs/runs/mnist/pgd_at,docs/runs/mnist/pgd_at_amp \
  --compared_with=docs/zoo/mnist_linf_published.csv --output_dir=docs/runs/mnist
echo "done: commit docs/runs/mnist/, then remove resume/mnist/"
