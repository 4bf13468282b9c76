#!/usr/bin/env bash
# After queue.sh: each sweep run's small files into docs/runs/sweep/<run>/ (what the sweep's
# report is made from and what the tests check it against), the report made again from them
# (docs/sweep/sweep.md, sweep.png), and docs/reproduction.md's quote of it replaced by the new
# text. From the repository root: bash resume/sweep/finish.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/root/atamp_runs/sweep}
ALL=(pgd_at pgd_at_amp_d0.0125 pgd_at_amp_d0.025 pgd_at_amp_d0.05 pgd_at_amp_d0.1 pgd_at_awp_g0.01)
for run in "${ALL[@]}"; do
  d=$RUNS/cifar10_l2_$run out=docs/runs/sweep/cifar10_l2_$run
  [ -f $d/summary.json ] || { echo "$run: $d/summary.json missing: run queue.sh first"; exit 1; }
  mkdir -p $out
  cp $d/flags.cfg $d/metrics.csv $d/run_config.json $d/summary.json $out/
  cp -r $d/plots $out/
  for e in eval eval_last; do
    [ -f $d/$e/report.json ] || { echo "$run: $d/$e/report.json missing"; exit 1; }
    mkdir -p $out/$e
    cp $d/$e/report.json $d/$e/report.md $d/$e/leaderboard.json $d/$e/per_example.npz $out/$e/
  done
done
old=$(mktemp); git show HEAD:docs/sweep/sweep.md > $old  # the committed text the doc quotes
$PY -m atamp_tf.reproduction --output_dir=docs/sweep \
  --sweep_runs=$(printf "docs/runs/sweep/cifar10_l2_%s," "${ALL[@]}" | sed 's/,$//')
$PY - $old docs/sweep/sweep.md docs/reproduction.md <<'PYEOF'
import sys
old, new, doc = (open(p, encoding="utf-8").read() for p in sys.argv[1:4])
if old not in doc:
    sys.exit(f"{sys.argv[3]} does not quote the previous sweep.md: put the new one in by hand")
open(sys.argv[3], "w", encoding="utf-8").write(doc.replace(old, new))
PYEOF
echo "done: write the sweep's reading in docs/reproduction.md and docs/sweep/README.md, commit docs/"
