#!/bin/bash
# Ctrl-C during `bec-jax generate`, N times at 4-6 s (timeout sends SIGINT): the exit codes
# (130 = clean stop; 139 = the crash that interpreter teardown with live XLA threads gave).
#   bash benchmarks/sigint_trials.sh [N] [SRC]   SRC: a checkout to test (default: this one)
N=${1:-8}; SRC=${2:-$PWD}; PY=${PY:-$PWD/.venv/bin/python}
cd "$(mktemp -d)" || exit 1
codes=""
for i in $(seq "$N"); do
  rm -rf s.h5*
  PYTHONPATH=$SRC timeout --preserve-status -s INT $(( 4 + i % 3 )) "$PY" -m bec_jax.cli generate --out s.h5 \
    --n 64 --n-groups 16 --states-per-group 2 --batch-size 2 --n-starts 2 --max-iter 600 --no-progress \
    > /dev/null 2>&1
  codes="$codes $?"
done
echo "exit codes:$codes"
