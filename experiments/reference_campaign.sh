#!/bin/bash
# The reference's work at its own scale where no GPU is lent: a long run on this machine (hours on two CPU
# cores), in the background, over as many sittings as it takes. Rerun the same command after a kill or in a
# later sitting: every step continues where it stopped (pipeline stages, generation batches, training epochs,
# pruning stages), and a finished step is skipped. benchmarks/gpu_check.sh does the same work on a GPU.
#   RUNS=runs/reference nohup nice bash experiments/reference_campaign.sh >> runs/reference.log 2>&1 &
# Steps, most valuable first:
# 1. `bec-jax pipeline --preset paper`: 1,680 states on 200², the 17.3M U-Net (Adam, 50 epochs), pruning,
#    int8, every model saved, reloaded and evaluated;
# 2. the reference's int8 scheme (one asymmetric scale and zero point over all convs), saved, reloaded, evaluated;
# 3. the reference's iterative pruning schedule (80, 90, 97, 99, 99.5, 99.9 %; 5 fine-tuning epochs at
#    lr 5e-4 per stage) from the dense model, with every stage's test MSE;
# 4. the optimizer study on the same data: AdamW and SGD at seed 0, then seeds 1 and 2 of all three;
# after each step, experiments/reference_comparison.py over whatever has finished (into
# RUNS/reference_comparison; copy it to experiments/results/reference_comparison when it is worth committing).
# GEN_BATCH: states per generation batch (default 24). PIPELINE_ARGS / PRUNE_ARGS / TRAIN_ARGS: extra flags of
# each command, and EPOCHS (default 50): a dry run at toy
# sizes, e.g. PIPELINE_ARGS="--data-n 32 --data-n-groups 8 --model-depth 2 --train-epochs 1 --compress-ft-epochs 1"
# PRUNE_ARGS="--ft-epochs 1" EPOCHS=1.
set -u
RUNS=${RUNS:-runs/reference}
BJ=${BEC_JAX:-.venv/bin/bec-jax}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$RUNS"
step() { echo "== $(date -u +%FT%TZ) $*"; }

# the table of whatever has finished, after every step
compare() {
  local args=(--run "$RUNS/paper" --out "$RUNS/reference_comparison")
  for opt in adamw sgd; do
    [ -f "$RUNS/optimizers/${opt}_seed0/metrics.json" ] && args+=(--optimizer-run "$opt=$RUNS/optimizers/${opt}_seed0")
  done
  [ -f "$RUNS/prune_reference/prune.json" ] && args+=(--pruning-run "$RUNS/prune_reference")
  [ -f "$RUNS/int8_reference/quantize.json" ] && args+=(--reference-int8 "$RUNS/int8_reference")
  "$PY" experiments/reference_comparison.py "${args[@]}" > /dev/null && echo "table: $RUNS/reference_comparison"
}

step "1. paper pipeline"
# The preset solves 240 states a batch, sized for a GPU; on a 24 GiB CPU machine that batch needs more memory
# than there is (the kernel kills it). The states do not depend on the batch (one key per state).
"$BJ" pipeline --preset paper --out "$RUNS/paper" --no-progress --data-batch-size "${GEN_BATCH:-24}" \
  ${PIPELINE_ARGS:-} || exit $?
compare

step "2. the reference's int8 scheme (one asymmetric scale over all convs)"
if [ ! -f "$RUNS/int8_reference/quantize.json" ]; then
  "$BJ" quantize --run "$RUNS/paper/train" --scheme reference_per_tensor --out "$RUNS/int8_reference" --overwrite \
    || exit $?
fi
compare

step "3. the reference's pruning schedule"
if [ ! -f "$RUNS/prune_reference/prune.json" ]; then
  "$BJ" prune --run "$RUNS/paper/train" --sparsity 0.999 --method iterative --schedule 0.8,0.9,0.97,0.99,0.995 \
    --ft-epochs 5 --ft-lr 5e-4 --keep last --out "$RUNS/prune_reference" ${PRUNE_ARGS:-} || exit $?
fi
compare

step "4. optimizer study"
for seed in 0 1 2; do
  for opt in adamw sgd adam; do
    [ "$opt" = adam ] && [ "$seed" = 0 ] && continue  # the pipeline's own training run
    "$BJ" train --data "$RUNS/paper/data.h5" --optimizer "$opt" --seed "$seed" --epochs "${EPOCHS:-50}" \
      --out "$RUNS/optimizers/${opt}_seed$seed" --no-progress ${TRAIN_ARGS:-} || exit $?
    compare
  done
done
step "done"
