#!/bin/bash
# The GPU check of benchmarks/results/gpu_h200/ (README, "On a GPU"); about 7 minutes on one H200.
# Needs jax with CUDA, flax, optax, orbax-checkpoint, h5py, tqdm, matplotlib, scipy, pytest-xdist.
#   OUT=benchmarks/results/gpu_h200 bash benchmarks/gpu_check.sh
# 1. the paper preset's whole dataset (1,680 states, 200², 4 starts, batches of 240), timed alone;
# 2. the quick pipeline and the default test suite (8 workers) side by side (not timings);
# 3. where real_time's float32 norm drift comes from (benchmarks/real_time_norm_drift.py).
OUT=${OUT:-benchmarks/results/gpu_check}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
L=$OUT/gpu.log
{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)"
  git log --oneline -1; } > "$L" 2>&1
echo "== paper preset generate (1,680 states, 200², 4 starts, batch 240)" >> "$L"
t0=$(date +%s)
timeout 230 python3 -m bec_jax.cli generate --preset paper --out /tmp/paper.h5 --no-progress >> "$L" 2>&1
echo "rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$L"
timeout 60 python3 -m bec_jax.cli show-data --data /tmp/paper.h5 --out "$OUT/paper_samples.png" >> "$L" 2>&1
echo "== quick pipeline and tests (concurrent)" >> "$L"
( timeout 250 python3 -m bec_jax.cli pipeline --preset quick --out /tmp/quick > "$OUT/pipeline.log" 2>&1
  echo "rc=$?" >> "$OUT/pipeline.log"; cp /tmp/quick/report.md "$OUT/pipeline_report.md" ) &
timeout 250 python3 -m pytest -q -n 8 -p no:cacheprovider > "$OUT/tests.log" 2>&1; echo "rc=$?" >> "$OUT/tests.log"
wait
timeout 60 python3 benchmarks/real_time_norm_drift.py > "$OUT/real_time_norm_drift.json"
date >> "$L"
