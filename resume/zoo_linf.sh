#!/usr/bin/env bash
# Issue 14's CIFAR-10 L-inf zoo pair (flags/zoo/cifar10_linf_{pgd_at,pgd_at_amp}.cfg), one
# resumable step after another; run it again after a kill and it continues where it stopped
# (training per epoch, evaluation per attack and AutoAttack batch, the reference per chunk).
# Do not edit it while it runs (bash reads a script as it goes). From the repository root:
#   nohup bash resume/zoo_linf.sh >> /root/atamp_runs/zoo/zoo_linf.log 2>&1 &
# 1. train the two side by side (a finished run is skipped);
# 2. evaluate each last checkpoint (the zoo ships the last: no epoch chosen on the test set) on
#    the first 1,000 CIFAR-10 test images: natural, PGD-20, PGD-100, CW-inf, standard AutoAttack;
# 3. copy the runs' small files to docs/runs/zoo/cifar10_linf_*/ and stop: the export's notes
#    say how the pair compares, so export is by hand (resume/README.md), then
# 4. (run the script again after the export) the reference AutoAttack on the first 500 test
#    images of each exported ONNX file, ours read back, into docs/eval/reference_parity/<name>/.
set -euo pipefail
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/root/atamp_runs/zoo}
export ATAMP_TF_NPZ_DIR=$(realpath ${ATAMP_TF_NPZ_DIR:-../shared/data})
RUN_NAMES=(pgd_at pgd_at_amp)
mkdir -p $RUNS

train() {
  grep -q '"complete": true' $RUNS/cifar10_linf_$1/summary.json 2>/dev/null && return 0
  $PY -m atamp_tf.train --flagfile=flags/zoo/cifar10_linf_$1.cfg \
    --out_dir=$RUNS/cifar10_linf_$1 >> $RUNS/$1.log 2>&1
}

evaluate() {
  local d=$RUNS/cifar10_linf_$1
  [ -f $d/eval_last/report.json ] || $PY -m atamp_tf.evaluate --model=$d --checkpoint=last \
    --npz_dir=$ATAMP_TF_NPZ_DIR --num_examples=1000 --batch_size=500 \
    --attacks=natural,pgd20,pgd100,cw_inf,autoattack --output_dir=$d/eval_last >> $RUNS/$1.eval.log 2>&1
}

reference() {  # run the exported entry's ONNX file against ours, one torch thread each
  local d=$RUNS/cifar10_linf_$1 name=cifar10-linf-preactresnet18-w16-n1000-${1//_/-}
  local out=docs/eval/reference_parity/$name
  [ -f $out/parity.json ] || $PY -m atamp_tf.evaluate.reference_cli \
    --onnx=atamp_tf/zoo/models/$name.onnx --model=$d --checkpoint=last \
    --npz_dir=$ATAMP_TF_NPZ_DIR --num_examples=500 --chunk_size=100 --torch_threads=1 \
    --ours_from=$d/eval_last --output_dir=$out >> $RUNS/$1.reference.log 2>&1
}

train pgd_at & a=$!; train pgd_at_amp & b=$!; wait $a; wait $b
evaluate pgd_at & a=$!; evaluate pgd_at_amp & b=$!; wait $a; wait $b
for run in "${RUN_NAMES[@]}"; do
  src=$RUNS/cifar10_linf_$run dst=docs/runs/zoo/cifar10_linf_$run
  mkdir -p $dst/eval_last
  cp -r $src/flags.cfg $src/metrics.csv $src/run_config.json $src/summary.json $src/plots $dst/
  cp $src/eval_last/report.json $src/eval_last/report.md $src/eval_last/leaderboard.json \
    $src/eval_last/per_example.npz $dst/eval_last/
done
exported=$($PY - <<'EOF'
import json
models = json.load(open("atamp_tf/zoo/manifest.json"))["models"]
print(all(m["training"]["budget"].get("checkpoint") == "last" for m in models
          if m["name"].startswith("cifar10-linf-preactresnet18-w16-n1000-pgd-at")))
EOF
)
[ "$exported" = True ] || { echo "zoo_linf: trained and evaluated; export the pair (resume/README.md), then run this again"; exit 0; }
reference pgd_at & a=$!; reference pgd_at_amp & b=$!; wait $a; wait $b
echo "zoo_linf: reference done: export --add_parity for both (resume/README.md)"
