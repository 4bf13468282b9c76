#!/usr/bin/env bash
# Issue 14's timing table: our standard AutoAttack before the issue's changes (commit
# 8ae856b^), ours now, and the reference (pyautoattack), on the same model (the sweep's PGD-AT
# last checkpoint, PreAct ResNet-18 width 16, CIFAR-10 L2 128/255: its best was chosen on the
# test set, so export refuses it), the same first N = 1,000 CIFAR-10 test images and the same
# machine: all three are measured here, each alone on an otherwise idle machine, and the
# machine is recorded (machine.txt); a rerun on another kind of machine refuses to mix the two
# (delete $OUT to measure again). Resumable: a finished step is skipped.
#   nohup bash docs/bench/autoattack_timing.sh >> /root/atamp_runs/timing.log 2>&1 &
# It needs the sweep's PGD-AT run in $RUNS/cifar10_l2_pgd_at: train it with
# flags/sweep/cifar10_l2_pgd_at.cfg (--out_dir there), or restore the copy that was committed
# until session 17: git archive da68ca2 resume/sweep/cifar10_l2_pgd_at | tar -x -C /tmp, then
# copy /tmp/resume/sweep/cifar10_l2_pgd_at to $RUNS/.
# Works in $RUNS/timing; writes docs/bench/autoattack_timing/{now,before,reference}/ (the
# reports and the parity, not the adversarial examples), machine.txt and timing.md.
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
[ -f $d/checkpoints/last.keras ] || { echo "timing: $d/checkpoints/last.keras missing (train or restore it first: this script's header)"; exit 1; }
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(grep -q avx512f /proc/cpuinfo && echo AVX-512 || echo 'AVX2, no AVX-512')"
[ -f $OUT/machine.txt ] || echo "$machine" > $OUT/machine.txt
[ "$(cat $OUT/machine.txt)" = "$machine" ] || { echo "timing: $OUT was measured on $(cat $OUT/machine.txt), this is $machine: delete $OUT to measure again"; exit 1; }

# 0. ours now, alone
[ -f $work/now/report.json ] || $PY -m atamp_tf.evaluate --model=$d --checkpoint=last \
  --npz_dir=$ATAMP_TF_NPZ_DIR --num_examples=$N --batch_size=500 --attacks=natural,autoattack \
  --output_dir=$work/now

# 1. ours before issue 14's changes, from a checkout of that commit
before=$work/before
[ -d $before ] || git worktree add --detach $before 8ae856b^
[ -x $before/.venv/bin/python ] || (cd $before && python3 -m venv .venv && .venv/bin/pip install -q -e .)
[ -f $work/before_eval/report.json ] || (cd $before && .venv/bin/python -m atamp_tf.evaluate \
  --model=$d/checkpoints/last.keras --dataset=cifar10 --npz_dir=$ATAMP_TF_NPZ_DIR \
  --num_examples=$N --norm=l2 --eps=128/255 --attacks=natural,autoattack --batch_size=500 \
  --output_dir=$work/before_eval)

# 2. the reference on the same model (the zoo entry that is this checkpoint, its ONNX file) and
#    examples, ours read back; resumable per chunk of 500 examples (reference_cli --chunk_size).
#    Its parity on all 1,000 is the zoo entry's too (export --add_parity, docs/runs/sweep/README.md)
onnx=$(realpath atamp_tf/zoo/models/cifar10-l2-preactresnet18-w16-n1000-pgd-at.onnx)
reference() {  # examples, torch threads, output directory
  [ -f $3/parity.json ] || $PY -m atamp_tf.evaluate.reference_cli --onnx=$onnx --model=$d \
    --npz_dir=$ATAMP_TF_NPZ_DIR --num_examples=$1 --batch_size=500 --torch_threads=$2 \
    --ours_from=$work/now --checkpoint=last --output_dir=$3
}
# the reference at its faster torch thread count on this machine (timed on the first 100)
for t in 1 2; do reference 100 $t $work/reference_threads$t; done
threads=$($PY -c 'import json, sys
print(min((1, 2), key=lambda t: json.load(open(f"{sys.argv[1]}/reference_threads{t}/parity.json"))["reference"]["seconds"]))' $work)
reference $N $threads $work/reference

# 3. the small files (reports, parity; not the adversarial examples) and the table
for step in now before_eval reference; do mkdir -p $OUT/${step%_eval}
  cp $work/$step/*.json $work/$step/*.md $OUT/${step%_eval}/; done
$PY - $OUT/now/report.json $OUT/before/report.json $OUT/reference/parity.json $OUT/timing.md "$machine" <<'EOF'
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
lines.append(f"\nMachine: {sys.argv[5]}; each step alone on it (docs/bench/autoattack_timing.sh). "
             f"The reference ran with {parity['reference']['settings']['torch_threads']} torch thread(s), "
             "the faster of 1 and 2 on the first 100 examples.")
open(sys.argv[4], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
