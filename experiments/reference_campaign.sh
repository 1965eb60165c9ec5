#!/bin/bash
# The reference's work at its own scale where no GPU is lent: a long run on this machine (hours on two CPU
# cores), in the background, over as many sittings as it takes. Rerun the same command after a kill or in a
# later sitting: every step continues where it stopped (pipeline stages, generation batches, training epochs,
# pruning epochs), and a finished step is skipped. benchmarks/gpu_check.sh does the same work on a GPU.
#   RUNS=runs/reference nohup nice bash experiments/reference_campaign.sh >> runs/reference.log 2>&1 &
# Steps, most valuable first:
# 1. `bec-jax pipeline --preset paper`: 1,680 states on 200², the 17.3M U-Net (Adam, 50 epochs), pruning,
#    int8, every model saved, reloaded and evaluated;
# 2. the reference's int8 scheme (one asymmetric scale and zero point over all convs), saved, reloaded, evaluated;
# 3. the reference's iterative pruning schedule (80, 90, 97, 99, 99.5, 99.9 %; 5 fine-tuning epochs at
#    lr 5e-4 per stage) from the dense model, every stage's model kept and evaluated (`--keep-stages`), and its
#    99.9 % model with its BatchNorm statistics recomputed (experiments/bn_recalibration.py; weights unchanged);
# 4. its other two schedules at 99, 99.5 and 99.9 %: one shot without training, one shot + 5 fine-tuning epochs;
# 5. AdamW and SGD at seed 0 (the optimizer study's first row);
# 6. the dense baseline of the pruning study: the dense model trained 30 more epochs at lr 5e-4 (the iterative
#    schedule's fine-tuning), so pruned and dense models have trained equally long;
# 7. bec_jax's recipe to 99.9 % (docs/compression.md): an 11-stage gradual schedule, 5 fine-tuning epochs per
#    stage at the training rate and 75 in the last, BatchNorm scales of pruned channels reclaimed, precise
#    BatchNorm statistics, the best epoch of each stage kept;
# 8. seeds 1 and 2 of Adam, AdamW and SGD;
# 9. step 3 again where its record predates kept stages (its earlier run moves to RUNS/superseded);
# after each step, experiments/reference_comparison.py over whatever has finished (into
# RUNS/reference_comparison; copy it to experiments/results/reference_comparison when it is worth committing).
# `reference_campaign.sh --status` lists what RUNS holds and lacks, step by step.
# `reference_campaign.sh --collect DEST TABLE` copies the finished steps' records (no data, no models) into DEST
# and writes the table from them (the committed experiments/results/paper_cpu and reference_comparison).
# `reference_campaign.sh --table DIR TABLE` writes the table from records collected in DIR alone.
# STEPS: the steps to run (default "1 2 3 4 5 6 7 8 9"); steps 5 and 8 need only the dataset, which is generated
# alone when step 1 is not among them (a machine that keeps nothing between sittings can run one optimizer seed a
# sitting: STEPS=8 OPT_RUNS=adamw:1, below). GEN_BATCH: states per generation batch (default 24).
# PIPELINE_ARGS / DATA_ARGS / PRUNE_ARGS / TRAIN_ARGS: extra flags of each command (DATA_ARGS: `bec-jax generate`
# where it runs alone), and EPOCHS (default 50): a dry run at toy sizes, e.g. PIPELINE_ARGS="--data-n 32
# --data-n-groups 8 --model-depth 2 --train-epochs 1 --compress-ft-epochs 1" DATA_ARGS="--n 32 --n-groups 8"
# PRUNE_ARGS="--ft-epochs 1 --last-ft-epochs 1" TRAIN_ARGS="--model-depth 2" EPOCHS=1.
# tests/experiments/test_reference_campaign.py runs steps 1–4 and 6–8 so, resumes them and collects them.
set -u
# bash reads a script as it runs it: the braces make it read all of this one first, so that the file rewritten in
# place during the hours of a campaign (cp, an editor; git writes a new file, which is harmless) does not change
# the running one
{
RUNS=${RUNS:-runs/reference}
BJ=${BEC_JAX:-.venv/bin/bec-jax}
PY=${PYTHON:-.venv/bin/python}
STEPS=" ${STEPS:-1 2 3 4 5 6 7 8 9} "
# an unknown argument (a typo of a mode, or a mode this checkout predates) must not start hours of work
[ $# -eq 0 ] || case "$1" in
  --status|--collect|--table) ;;
  *) echo "reference_campaign.sh: unknown argument '$1' (the modes: --status, --collect DEST TABLE, --table DIR" \
       "TABLE; the campaign runs without arguments)" >&2; exit 2 ;;
esac
for s in $STEPS; do
  [[ $s =~ ^[1-9]$ ]] || { echo "reference_campaign.sh: STEPS takes steps 1 to 9, got '$s'" >&2; exit 2; }
done
for run in ${OPT_RUNS:-}; do
  [[ $run =~ ^(adam|adamw|sgd):[0-9]+$ ]] ||
    { echo "reference_campaign.sh: OPT_RUNS takes optimizer:seed (adam, adamw, sgd), got '$run'" >&2; exit 2; }
done
step() { echo "== $(date -u +%FT%TZ) $*"; }
want() { [[ $STEPS == *" $1 "* ]]; }

# the table of whatever has finished under ROOT (default RUNS; the paper run in PAPER, default ROOT/paper) into
# OUT (default ROOT/reference_comparison), after every step
compare() {
  local root=${1:-$RUNS} paper=${2:-${1:-$RUNS}/paper} out=${3:-${1:-$RUNS}/reference_comparison} d
  local args=(--run "$paper" --out "$out")
  [ -f "$paper/report.json" ] || return 0  # the table starts from the paper run
  for d in "$root"/optimizers/*_seed*; do
    [ -f "$d/metrics.json" ] && [ "$(basename "$d")" != adam_seed0 ] && args+=(--optimizer-run "$(basename "$d" | cut -d_ -f1)=$d")
  done
  for d in "$root"/prune_*; do
    [ -f "$d/prune.json" ] && args+=(--pruning-run "$d")
  done
  [ -f "$root/int8_reference/quantize.json" ] && args+=(--reference-int8 "$root/int8_reference")
  "$PY" experiments/reference_comparison.py "${args[@]}" > /dev/null && echo "table: $out"
}

# --status: the record files each step writes, which of them RUNS holds and which it lacks, and the paper
# pipeline's finished stages: what a later sitting still has to run (its STEPS and OPT_RUNS)
if [ "${1:-}" = --status ]; then
  [ -d "$RUNS" ] || { echo "reference_campaign.sh: no campaign in RUNS=$RUNS" >&2; exit 2; }
  records() {  # STEP RECORD...: how many of the step's record files are in RUNS, naming the missing ones
    local s=$1 n=0 f missing=()
    shift
    for f in "$@"; do if [ -f "$RUNS/$f" ]; then n=$((n + 1)); else missing+=("$f"); fi; done
    echo "step $s: $n of $# records${missing[0]:+; missing ${missing[*]}}"
  }
  evaluated() { local r; for r in "$@"; do echo "optimizers/${r%%:*}_seed${r##*:}/eval_val_latest/evaluation.json"; done; }
  records 1 paper/report.json paper/train/eval_val_latest/evaluation.json
  [ -f "$RUNS/paper/report.json" ] || [ ! -d "$RUNS/paper/stages" ] ||
    echo "  pipeline stages finished: $(cd "$RUNS/paper/stages" && ls ./*.json 2>/dev/null | sed 's|^./||; s|.json$||' | xargs)"
  records 2 int8_reference/quantize.json
  records 3 prune_iterative/prune.json prune_iterative/bn_recalibration.json
  records 4 prune_oneshot_{0.99,0.995,0.999}/prune.json prune_finetune_{0.99,0.995,0.999}/prune.json
  records 5 $(evaluated adamw:0 sgd:0)
  records 6 prune_dense_baseline/prune.json
  records 7 prune_recipe/prune.json
  records 8 $(evaluated adam:1 adamw:1 sgd:1 adam:2 adamw:2 sgd:2)
  if [ -f "$RUNS/prune_iterative/prune.json" ] && [ ! -d "$RUNS/prune_iterative/stages" ]; then
    echo "step 9: to run (step 3's record predates kept stages)"
  fi
  exit 0
fi

# a mode's missing arguments: one line, exit 2
usage() { echo "reference_campaign.sh: $1 takes two folders: $1 $2 TABLE" >&2; exit 2; }

# --table DIR TABLE: the table from the records collected in DIR alone (what --collect ends with): the committed
# table remade from the committed records
if [ "${1:-}" = --table ]; then
  [ $# -eq 3 ] || usage --table DIR
  dir=$2 table=$3
  [ -f "$dir/report.json" ] || { echo "reference_campaign.sh: no paper run's report.json in '$dir'" >&2; exit 2; }
  compare "$dir" "$dir" "$table"
  exit $?
fi

# --collect DEST TABLE: copy the records of every finished step (JSON, markdown and figures; not the data or the
# models) from RUNS to DEST, the paper run's at its top, and write the comparison table from DEST into TABLE,
# so that the committed table can be remade from committed files.
if [ "${1:-}" = --collect ]; then
  [ $# -eq 3 ] || usage --collect DEST
  dest=$2 table=$3
  mkdir -p "$dest/stages" || exit 1
  src=$RUNS/paper
  copy_eval() { [ -f "$1/eval_val_latest/evaluation.json" ] && mkdir -p "$2/eval_val_latest" &&
    cp "$1/eval_val_latest/evaluation.json" "$2/eval_val_latest/"; }
  if [ -f "$src/report.json" ]; then  # absent where only later steps ran (STEPS): DEST keeps its paper run
    cp "$src"/{config.json,report.json,report.md} "$src"/*.png "$dest"/ && cp "$src"/stages/*.json "$dest/stages/" \
      || exit 1
    cp "$src/train/metrics.json" "$dest/" || exit 1
    copy_eval "$src/train" "$dest"
  fi
  for d in "$RUNS"/optimizers/*_seed*; do
    [ -f "$d/eval_val_latest/evaluation.json" ] || continue  # finished and evaluated (not one still training)
    mkdir -p "$dest/optimizers/$(basename "$d")" && cp "$d/metrics.json" "$dest/optimizers/$(basename "$d")/"
    copy_eval "$d" "$dest/optimizers/$(basename "$d")"
  done
  for d in "$RUNS"/prune_*; do
    [ -f "$d/prune.json" ] && mkdir -p "$dest/$(basename "$d")" && cp "$d/prune.json" "$dest/$(basename "$d")/"
    [ -f "$d/bn_recalibration.json" ] && cp "$d"/bn_recalibration.{json,md} "$dest/$(basename "$d")/"
  done
  [ -f "$RUNS/int8_reference/quantize.json" ] && mkdir -p "$dest/int8_reference" &&
    cp "$RUNS/int8_reference/quantize.json" "$dest/int8_reference/"
  compare "$dest" "$dest" "$table"
  exit $?
fi
mkdir -p "$RUNS"

# bec-jax prune from the dense model into RUNS/NAME unless it has finished; FLAGS: its settings
prune() {
  local name=$1
  shift
  if [ ! -f "$RUNS/$name/prune.json" ]; then
    "$BJ" prune --run "$RUNS/paper/train" --out "$RUNS/$name" --no-progress "$@" ${PRUNE_ARGS:-} || exit $?
  fi
  compare
}

# bec-jax evaluate of training run DIR's last checkpoint (epoch 50) on the validation split: the fidelity and
# vortex counts of the model the reference's validation-loss rows measure
evaluate_val() {
  [ -f "$1/eval_val_latest/evaluation.json" ] || "$BJ" evaluate --run "$1" --checkpoint latest --split val \
    --samples 0 --no-progress --out "$1/eval_val_latest" > /dev/null || exit $?
}

# bec-jax train of OPTIMIZER at SEED on the paper data into RUNS/optimizers/OPTIMIZER_seedSEED
train() {
  "$BJ" train --data "$RUNS/paper/data.h5" --optimizer "$1" --seed "$2" --epochs "${EPOCHS:-50}" \
    --out "$RUNS/optimizers/$1_seed$2" --no-progress ${TRAIN_ARGS:-} || exit $?
  evaluate_val "$RUNS/optimizers/$1_seed$2"
  compare
}

# The preset solves 240 states a batch, sized for a GPU; on a 24 GiB CPU machine that batch needs more memory
# than there is (the kernel kills it). The states do not depend on the batch (one key per state).
if want 1; then
  step "1. paper pipeline"
  "$BJ" pipeline --preset paper --out "$RUNS/paper" --no-progress --data-batch-size "${GEN_BATCH:-24}" \
    ${PIPELINE_ARGS:-} || exit $?
  evaluate_val "$RUNS/paper/train"
  compare
elif { want 5 || want 8; } && [ ! -f "$RUNS/paper/data.h5" ]; then
  step "the paper preset's dataset (the pipeline's first stage, alone)"
  mkdir -p "$RUNS/paper" && "$BJ" generate --preset paper --out "$RUNS/paper/data.h5" --no-progress \
    --batch-size "${GEN_BATCH:-24}" ${DATA_ARGS:-} || exit $?
fi

if want 2; then
  step "2. the reference's int8 scheme (one asymmetric scale over all convs)"
  if [ ! -f "$RUNS/int8_reference/quantize.json" ]; then
    "$BJ" quantize --run "$RUNS/paper/train" --scheme reference_per_tensor --out "$RUNS/int8_reference" \
      --overwrite || exit $?
  fi
  compare
fi

# the reference's iterative schedule, every stage's model kept and evaluated, then the 99.9 % weights with their
# BatchNorm statistics recomputed (is the eval-mode failure in the statistics?)
iterative_schedule() {
  prune prune_iterative --sparsity 0.999 --method iterative --schedule 0.8,0.9,0.97,0.99,0.995 --ft-epochs 5 \
    --ft-lr 5e-4 --keep last --keep-stages
  if [ ! -f "$RUNS/prune_iterative/bn_recalibration.json" ]; then
    "$PY" experiments/bn_recalibration.py --run "$RUNS/paper/train" --model "$RUNS/prune_iterative/model" \
      --out "$RUNS/prune_iterative" --no-progress > /dev/null || exit $?
  fi
  compare
}

if want 3; then
  step "3. the reference's iterative pruning schedule"
  iterative_schedule
fi

if want 4; then
  step "4. one shot, without and with fine-tuning"
  for s in 0.99 0.995 0.999; do
    prune "prune_oneshot_$s" --sparsity "$s" --method prune --ft-epochs 0
  done
  for s in 0.99 0.995 0.999; do
    prune "prune_finetune_$s" --sparsity "$s" --method finetune --ft-epochs 5 --ft-lr 5e-4 --keep last
  done
fi

if want 5; then
  step "5. optimizer study, seed 0"
  train adamw 0
  train sgd 0
fi

if want 6; then
  step "6. the dense baseline of the pruning study"
  prune prune_dense_baseline --sparsity 0 --method finetune --ft-epochs 30 --ft-lr 5e-4 --keep last
fi

if want 7; then
  step "7. bec_jax's pruning recipe"
  prune prune_recipe --sparsity 0.999 --method iterative \
    --schedule 0.8,0.9,0.95,0.97,0.98,0.99,0.993,0.995,0.997,0.998 --ft-epochs 5 --last-ft-epochs 75 --ft-lr 1e-3 \
    --reclaim-dead-scales --precise-bn --keep best --keep-stages
fi

# OPT_RUNS: step 8's runs as optimizer:seed (default all six, in this order)
if want 8; then
  step "8. optimizer study, seeds 1 and 2"
  for run in ${OPT_RUNS:-adam:1 adamw:1 sgd:1 adam:2 adamw:2 sgd:2}; do
    train "${run%%:*}" "${run##*:}"
  done
fi
# a step-3 run from before its stages were kept has only its last model evaluated: run it again, keeping them
# (the earlier run moves to RUNS/superseded, outside the table)
if want 9 && [ -f "$RUNS/prune_iterative/prune.json" ] && [ ! -d "$RUNS/prune_iterative/stages" ]; then
  step "9. the reference's iterative schedule again, every stage kept and evaluated"
  mkdir -p "$RUNS/superseded" && mv "$RUNS/prune_iterative" "$RUNS/superseded/prune_iterative.$(date +%s)" || exit 1
  iterative_schedule
fi
step "done"
exit 0
}
