#!/usr/bin/env bash
# After queue.sh: each sweep run's small files into docs/runs/sweep/<run>/ (what the sweep's
# report is made from and what the tests check it against), the report made again from them
# (docs/sweep/sweep.md, sweep.png), and docs/reproduction.md's quote of the old report replaced
# by the new one. Checks every run first, so a missing file changes nothing. Run it again at
# any time: it gives the same result. From the repository root: bash resume/sweep/finish.sh
# (PARTIAL=1 bash resume/sweep/finish.sh: the same with the evaluations finished so far, for a
# status between sessions; a run's missing evaluation is left out of the report.)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/root/atamp_runs/sweep}
ALL=(pgd_at pgd_at_amp_d0.0125 pgd_at_amp_d0.025 pgd_at_amp_d0.05 pgd_at_amp_d0.1 pgd_at_awp_g0.01)
EVAL_FILES=(report.json report.md leaderboard.json per_example.npz)
for run in "${ALL[@]}"; do d=$RUNS/cifar10_l2_$run
  [ -f "$d/summary.json" ] || { echo "$run: $d/summary.json missing: run queue.sh" >&2; exit 1; }
  $PY -c 'import json, sys
done, epochs = (json.load(open(p))[k] for p, k in zip(sys.argv[1:], ("epochs_done", "epochs")))
sys.exit(0 if done == epochs else f"{sys.argv[1]}: {done} of {epochs} epochs")' \
    "$d/summary.json" "$d/run_config.json" || { echo "$run: not finished: run queue.sh" >&2; exit 1; }
  [ -n "${PARTIAL:-}" ] && continue
  for e in eval eval_last; do for f in "${EVAL_FILES[@]}"; do
    [ -f "$d/$e/$f" ] || { echo "$run: $d/$e/$f missing: run queue.sh" >&2; exit 1; }
  done; done
done
runs_in_docs() { ls -d docs/runs/sweep/*/ | sed 's|/$||' | paste -sd, -; }
old=$($PY -c 'import sys; from atamp_tf.tools import sweep
print(sweep.sweep_markdown(sweep.load_runs(sys.argv[1].split(","))), end="")' "$(runs_in_docs)")
for run in "${ALL[@]}"; do d=$RUNS/cifar10_l2_$run out=docs/runs/sweep/cifar10_l2_$run
  mkdir -p "$out/eval" "$out/eval_last"
  cp "$d/flags.cfg" "$d/metrics.csv" "$d/run_config.json" "$d/summary.json" "$out/"
  cp -r "$d/plots" "$out/"
  for e in eval eval_last; do
    [ -f "$d/$e/report.json" ] || { rmdir "$out/$e" 2>/dev/null || true; continue; }  # PARTIAL only
    for f in "${EVAL_FILES[@]}"; do cp "$d/$e/$f" "$out/$e/"; done; done
done
$PY -m atamp_tf.reproduction --output_dir=docs/sweep --sweep_runs="$(runs_in_docs)"
OLD="$old" $PY - docs/sweep/sweep.md docs/reproduction.md <<'PYEOF'
import os, sys
old, (new, doc) = os.environ["OLD"], (open(p, encoding="utf-8").read() for p in sys.argv[1:3])
if new in doc:
    sys.exit(0)
if old not in doc:
    sys.exit(f"{sys.argv[2]} quotes neither the old nor the new sweep.md: put the new one in")
open(sys.argv[2], "w", encoding="utf-8").write(doc.replace(old, new))
PYEOF
echo "done: write the sweep's reading in docs/reproduction.md and docs/sweep/README.md, commit docs/"
