#!/bin/bash
# The GPU check: one prepared script for a short device lease (15 minutes of device time in all, at most
# 575 s a call). Needs jax with CUDA, flax, optax, orbax-checkpoint, h5py, tqdm, matplotlib, scipy, pytest.
#   OUT=benchmarks/results/gpu_h200 bash benchmarks/gpu_check.sh
#   STEPS="pipeline optimizers schedules" OUT=... bash benchmarks/gpu_check.sh     (a chosen subset, in order)
# Steps (default: all, in this order of importance), each bounded so that the later ones keep their time:
#   tests       int8 convolutions in every geometry and bfloat16 compute on the GPU;
#   pipeline    `bec-jax pipeline --preset paper` end to end, alone on the GPU (timed: report.json's
#               stage_seconds), and its epoch-50 model on the validation split;
#   latency     the pipeline's saved models: latencies (benchmarks/accelerator_throughput.py --parts models);
#   throughput  the solver against the memory roofline (n = 200, batches 256-4096), paper-preset ground
#               states per second, U-Net fp32/bf16;
#   optimizers  the reference's optimizer study on the pipeline's data (AdamW, SGD; 50 epochs each);
#   schedules   the reference's iterative pruning schedule to 99.9 % from the pipeline's dense model, and its
#               99.9 % model with recomputed BatchNorm statistics (experiments/bn_recalibration.py);
#   online      experiments/online_training.py at 64²: fresh ground states inside every training step against
#               fixed datasets (the one step that does not resume inside itself: a stopped call redoes it).
# Calls resume on a warm machine: STATE (/tmp/gpu_check) keeps every step's work and a mark for each finished
# step, which a later call skips (the pipeline, training and pruning also resume inside themselves), and every
# call copies all results so far to OUT. Results come back as few files (the device tool returns a limited
# number): the pipeline's records as one archive. PIPELINE_ARGS, BENCH_ARGS, TRAIN_ARGS, PRUNE_ARGS,
# ONLINE_ARGS: extra flags. A CPU dry run at tiny sizes (tests/benchmarks/test_gpu_check.py runs it, ~4 min):
#   PIPELINE_ARGS="--data-n 32 --data-n-groups 8 --data-states-per-group 2 --model-depth 2 --train-epochs 1
#   --compress-ft-epochs 1" BENCH_ARGS=--smoke TRAIN_ARGS="--model-depth 2 --epochs 1"
#   PRUNE_ARGS="--ft-epochs 1 --last-ft-epochs 1" ONLINE_ARGS="--quick --batch-size 8 --n 32" BUDGET_S=3000
#   CAP_SCALE=5
[ $# -eq 0 ] || { echo "gpu_check.sh: takes no arguments (its settings are environment variables: STEPS, OUT, ...)," \
  "got '$1'" >&2; exit 2; }
STEPS=${STEPS:-tests pipeline latency throughput optimizers schedules online}
for s in $STEPS; do
  case " tests pipeline latency throughput optimizers schedules online " in *" $s "*) ;;
    *) echo "gpu_check.sh: unknown step '$s' in STEPS (tests pipeline latency throughput optimizers schedules" \
         "online)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-benchmarks/results/gpu_check}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
STATE=${STATE:-/tmp/gpu_check}; R=$STATE/results; P=$STATE/paper; mkdir -p "$R"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-575} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
# cap MAX RESERVE: a timeout of min(MAX, time left - RESERVE) s, at least 1 (timeout 0 would mean none); the
# MAXes are sized for a GPU, CAP_SCALE (default 1) multiplies them for a CPU dry run
cap() { local t=$(( $(left) - $2 )) m=$(( $1 * ${CAP_SCALE:-1} )); t=$(( t < m ? t : m )); echo $(( t < 1 ? 1 : t )); }
L=$R/gpu.log
BJ="python3 -m bec_jax.cli"
{ echo "== call $(date -u +%FT%TZ), steps: $STEPS"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)"
  git log --oneline -1 2>/dev/null; } >> "$L" 2>&1

collect() {  # everything so far to OUT (after every step: a call stopped by its limit still returns it)
  [ -f "$P/stages/train.json" ] && ( cd "$P" && tar czf "$R/paper_run.tgz" report.md report.json config.json \
    ./*.png stages train/metrics.json train/eval_val_latest/evaluation.json 2>/dev/null )
  cp -r "$R/." "$OUT/"
}

evaluate_val() {  # DIR's epoch-50 model on the validation split (the reference's validation-loss rows)
  [ -f "$1/eval_val_latest/evaluation.json" ] || timeout "$(cap 60 0)" $BJ evaluate --run "$1" --checkpoint latest \
    --split val --samples 0 --no-progress --out "$1/eval_val_latest" > /dev/null 2>> "$L"
}

step_tests() {
  timeout "$(cap 160 0)" python3 -m pytest -q -p no:cacheprovider -m "" tests/compress/test_quantization.py \
    tests/models/test_unet.py -k "int8 or bfloat16 or batchnorm or gemm" > "$R/tests_int8_bf16.log" 2>&1
  local rc=$?; echo "rc=$rc" >> "$R/tests_int8_bf16.log"; tail -3 "$R/tests_int8_bf16.log" >> "$L"
  [ $rc -le 1 ]  # passed or failed tests are results; a timeout or a collection error is not
}

step_pipeline() {
  timeout "$(cap 100000 140)" $BJ pipeline --preset paper --out "$P" --no-progress $PIPELINE_ARGS \
    >> "$R/paper_pipeline.log" 2>&1 || return 1
  evaluate_val "$P/train"
}

step_latency() {
  [ -f "$STATE/done_pipeline" ] || { echo "no finished pipeline: run the pipeline step first" >> "$L"; return 1; }
  timeout "$(cap 60 0)" python3 benchmarks/accelerator_throughput.py --parts models --models "$P/models" \
    $BENCH_ARGS --out "$R/model_latency.json" >> "$L" 2>&1
}

step_throughput() {
  timeout "$(cap 150 0)" python3 benchmarks/accelerator_throughput.py --parts solver,unet,pcg $BENCH_ARGS \
    --out "$R/accelerator_throughput.json" >> "$L" 2>&1
}

step_optimizers() {
  [ -f "$P/data.h5" ] || { echo "no paper dataset: run the pipeline step first" >> "$L"; return 1; }
  local opt ok=0
  for opt in adamw sgd; do
    local d=$STATE/opt_$opt
    if [ ! -f "$d/eval_val_latest/evaluation.json" ]; then
      [ "$(left)" -gt 100 ] || { ok=1; continue; }
      echo "-- $opt ($(left) s left)" >> "$L"
      timeout "$(cap 100000 70)" $BJ train --data "$P/data.h5" --optimizer $opt --epochs 50 --checkpoint-every 5 \
        --out "$d" --no-progress $TRAIN_ARGS >> "$STATE/train_$opt.log" 2>&1 && evaluate_val "$d" || ok=1
      grep -v cuda_timer "$STATE/train_$opt.log" | tail -5 > "$R/train_$opt.tail"
    fi
    # a folder experiments/reference_comparison.py reads as --optimizer-run $opt=OUT/opt_$opt
    mkdir -p "$R/opt_$opt/eval_val_latest"; cp "$d/metrics.json" "$R/opt_$opt/" 2>/dev/null
    cp "$d/eval_val_latest/evaluation.json" "$R/opt_$opt/eval_val_latest/" 2>/dev/null
  done
  return $ok
}

step_schedules() {
  [ -f "$P/stages/train.json" ] || { echo "no trained paper model: run the pipeline step first" >> "$L"; return 1; }
  [ -f "$STATE/prune_iterative/prune.json" ] || timeout "$(cap 100000 30)" $BJ prune --run "$P/train" \
    --out "$STATE/prune_iterative" --no-progress --sparsity 0.999 --method iterative \
    --schedule 0.8,0.9,0.97,0.99,0.995 --ft-epochs 5 --ft-lr 5e-4 --keep last --keep-stages $PRUNE_ARGS \
    >> "$R/prune_iterative.log" 2>&1 || return 1
  mkdir -p "$R/prune_iterative" && cp "$STATE/prune_iterative/prune.json" "$R/prune_iterative/"
  # the 99.9 % model with its BatchNorm statistics recomputed (same weights)
  timeout "$(cap 100000 10)" python3 experiments/bn_recalibration.py --run "$P/train" \
    --model "$STATE/prune_iterative/model" --out "$R/prune_iterative" --no-progress >> "$R/prune_iterative.log" 2>&1
}

step_online() {
  timeout "$(cap 100000 15)" python3 experiments/online_training.py --out "$R/online_training" --n 64 \
    --batch-size 32 --steps 600 --fixed-sizes 256,1024 --eval-every 60 --n-test 128 $ONLINE_ARGS \
    >> "$R/online_training.log" 2>&1
}

# a step's mark holds the extra flags it ran with: a call with other flags (a dry run before a real one on the
# same machine) does not take it as done
FLAGS="$PIPELINE_ARGS|$BENCH_ARGS|$TRAIN_ARGS|$PRUNE_ARGS|$ONLINE_ARGS"
for s in $STEPS; do
  if [ -f "$STATE/done_$s" ] && [ "$(cat "$STATE/done_$s")" = "$FLAGS" ]; then
    echo "== $s: done in an earlier call" >> "$L"; continue
  fi
  if [ "$(left)" -lt 30 ]; then echo "== $s: no time left" >> "$L"; continue; fi
  echo "== $s ($(left) s left)" >> "$L"
  t0=$(date +%s)
  if "step_$s"; then echo "$FLAGS" > "$STATE/done_$s"; echo "   $s done in $(( $(date +%s) - t0 )) s" >> "$L"
  else echo "   $s unfinished after $(( $(date +%s) - t0 )) s (a later call resumes it)" >> "$L"; fi
  collect
done
date -u +%FT%TZ >> "$L"; collect
