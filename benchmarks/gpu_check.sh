#!/bin/bash
# The GPU check: one prepared script for a short device lease (about 9.5 minutes on one H200).
# Needs jax with CUDA, flax, optax, orbax-checkpoint, h5py, tqdm, matplotlib, scipy, pytest.
#   OUT=benchmarks/results/gpu_h200 bash benchmarks/gpu_check.sh
# In order of importance, each step bounded so that the later ones keep their time:
# 1. int8 convolutions in every geometry, and bfloat16 compute, on the GPU (tests);
# 2. `bec-jax pipeline --preset paper` end to end, alone on the GPU (timed), and its epoch-50 model on the
#    validation split; its results come back as one archive (the device tool returns a limited number of files);
# 3. benchmarks/accelerator_throughput.py: the saved models' latencies, the solver against the memory
#    roofline (n = 200, batches 256-4096), paper-preset ground states per second, U-Net fp32/bf16;
# 4. with the time left: the reference's optimizer study on the same data (AdamW, SGD; 50 epochs).
# PIPELINE_ARGS / BENCH_ARGS / TRAIN_ARGS: extra flags (a CPU dry run: tiny sizes and --smoke).
OUT=${OUT:-benchmarks/results/gpu_check}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-575} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
L=$OUT/gpu.log
{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)"
  git log --oneline -1 2>/dev/null; } > "$L" 2>&1

echo "== 1. int8 and bfloat16 tests ($(left) s left)" >> "$L"
timeout 160 python3 -m pytest -q -p no:cacheprovider -m "" tests/compress/test_quantization.py \
  tests/models/test_unet.py -k "int8 or bfloat16 or batchnorm or gemm" > "$OUT/tests_int8_bf16.log" 2>&1
echo "rc=$?" >> "$OUT/tests_int8_bf16.log"; tail -3 "$OUT/tests_int8_bf16.log" >> "$L"

echo "== 2. paper pipeline ($(left) s left)" >> "$L"
t0=$(date +%s)
timeout $(( $(left) - 140 )) python3 -m bec_jax.cli pipeline --preset paper \
  --out /tmp/paper --no-progress $PIPELINE_ARGS > "$OUT/paper_pipeline.log" 2>&1
echo "rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$L"
# the epoch-50 model on the validation split: fidelity and vortex counts beside the reference's validation loss
[ -f /tmp/paper/report.json ] && timeout 45 python3 -m bec_jax.cli evaluate --run /tmp/paper/train --checkpoint latest \
  --split val --samples 0 --no-progress --out /tmp/paper/train/eval_val_latest > /dev/null 2>> "$L"
( cd /tmp/paper && tar czf "$OUT/paper_run.tgz" report.md report.json config.json ./*.png stages \
  train/metrics.json train/eval_val_latest/evaluation.json 2>/dev/null )

echo "== 3. accelerator_throughput ($(left) s left)" >> "$L"
B=benchmarks/accelerator_throughput.py
[ -d /tmp/paper/models ] && timeout 60 python3 $B --parts models --models /tmp/paper/models $BENCH_ARGS \
  --out "$OUT/model_latency.json" >> "$L" 2>&1
timeout $(( $(left) > 150 ? 150 : $(left) )) python3 $B --parts solver,unet,pcg $BENCH_ARGS \
  --out "$OUT/accelerator_throughput.json" >> "$L" 2>&1

for opt in adamw sgd; do
  if [ "$(left)" -gt 100 ] && [ -f /tmp/paper/data.h5 ]; then
    echo "== 4. optimizer $opt ($(left) s left)" >> "$L"
    timeout $(( $(left) - 70 )) python3 -m bec_jax.cli train --data /tmp/paper/data.h5 --optimizer $opt \
      --epochs 50 --checkpoint-every 50 --out /tmp/opt_$opt --no-progress $TRAIN_ARGS > "$OUT/train_$opt.log" 2>&1
    rc=$?; echo "rc=$rc" >> "$L"
    # a folder experiments/reference_comparison.py reads as --optimizer-run $opt=OUT/opt_$opt
    [ $rc -eq 0 ] && timeout 60 python3 -m bec_jax.cli evaluate --run /tmp/opt_$opt --checkpoint latest --split val \
      --samples 0 --no-progress --out /tmp/opt_$opt/eval_val_latest > /dev/null 2>> "$L"
    mkdir -p "$OUT/opt_$opt/eval_val_latest"; cp /tmp/opt_$opt/metrics.json "$OUT/opt_$opt/" 2>/dev/null
    cp /tmp/opt_$opt/eval_val_latest/evaluation.json "$OUT/opt_$opt/eval_val_latest/" 2>/dev/null
    grep -v cuda_timer "$OUT/train_$opt.log" | tail -5 > "$OUT/train_$opt.tail"; rm -f "$OUT/train_$opt.log"
  fi
done
date >> "$L"
