#!/usr/bin/env bash
# Issue 14's timing table: our standard AutoAttack before the issue's changes (commit
# 8ae856b^), ours now, and the reference (pyautoattack), on the same model (the sweep's PGD-AT
# last checkpoint, PreAct ResNet-18 width 16, CIFAR-10 L2 128/255: its best was chosen on the
# test set, so export refuses it), the same first N = 1,000
# CIFAR-10 test images and the same machine. Run it on an otherwise idle machine (each step
# alone), after resume/sweep/queue.sh, which evaluates that checkpoint alone first ("ours now"
# is that evaluation: resume/sweep/queue.sh's step 2). Resumable: a finished step is skipped.
#   nohup bash resume/autoattack_timing.sh >> /root/atamp_runs/timing.log 2>&1 &
# Writes docs/bench/autoattack_timing/{before,reference}/ and timing.md.
set -euo pipefail
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/root/atamp_runs/sweep}
N=${N:-1000}
export ATAMP_TF_NPZ_DIR=$(realpath ${ATAMP_TF_NPZ_DIR:-../shared/data})
OUT=${OUT:-docs/bench/autoattack_timing}
mkdir -p $OUT
OUT=$(realpath $OUT)
d=$(realpath -m $RUNS/cifar10_l2_pgd_at)
work=$(realpath -m $RUNS/timing)
mkdir -p $work
[ -f $d/eval_last/report.json ] || { echo "run resume/sweep/queue.sh first: $d/eval_last/report.json"; exit 1; }

# 1. the reference on the same model (its ONNX export) and examples; ours read back
onnx=$work/models/sweep-l2-pgd-at.onnx
[ -f $onnx ] || $PY -m atamp_tf.export --run_dir=$d --checkpoint=last --name=sweep-l2-pgd-at \
  --manifest=$work/manifest.json --out_dir=$work/models --card_dir=$work/cards \
  --allow_failed_checks  # not a zoo entry: only the file the reference attacks
[ -f $OUT/reference/parity.json ] || $PY -m atamp_tf.evaluate.reference_cli --onnx=$onnx \
  --model=$d --npz_dir=$ATAMP_TF_NPZ_DIR --num_examples=$N --batch_size=500 \
  --ours_from=$d/eval_last --checkpoint=last --output_dir=$OUT/reference

# 2. ours before issue 14's changes, from a checkout of that commit
before=$work/before
[ -d $before ] || git worktree add --detach $before 8ae856b^
[ -x $before/.venv/bin/python ] || (cd $before && python3 -m venv .venv && .venv/bin/pip install -q -e .)
[ -f $OUT/before/report.json ] || (cd $before && .venv/bin/python -m atamp_tf.evaluate \
  --model=$d/checkpoints/last.keras --dataset=cifar10 --npz_dir=$ATAMP_TF_NPZ_DIR \
  --num_examples=$N --norm=l2 --eps=128/255 --attacks=natural,autoattack --batch_size=500 \
  --output_dir=$OUT/before)

# 3. the table
$PY - $d/eval_last/report.json $OUT/before/report.json $OUT/reference/parity.json $OUT/timing.md <<'EOF'
import json, sys
now, before, parity = (json.load(open(p)) for p in sys.argv[1:4])
def ours(report):
    a = report["attacks"]["autoattack"]
    return a["seconds"], a["num_correct"], a["settings"]["version"], report["num_examples"]
rows = [("ours before (commit 8ae856b^)", *ours(before)), ("ours now", *ours(now))]
ref = parity["reference"]
rows.append(("reference (pyautoattack)", ref["seconds"],
             round(ref["robust_accuracy"] * parity["num_examples"]), "standard",
             parity["num_examples"]))
lines = ["| AutoAttack | version | examples | robust | seconds | seconds per robust example |",
         "| --- | --- | ---: | ---: | ---: | ---: |"]
for name, seconds, robust, version, n in rows:
    lines.append(f"| {name} | {version} | {n} | {robust} | {seconds:.0f} | "
                 f"{seconds / max(robust, 1):.2f} |")
open(sys.argv[4], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
