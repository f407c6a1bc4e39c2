#!/usr/bin/env bash
# make bench-gpu: on a machine with an NVIDIA GPU, .venv-gpu with requirements.lock and the
# CUDA build of the same jax (jax[cuda13] where the driver is 580 or newer, else
# jax[cuda12]), its CUDA wheels pinned by benchmarks/requirements-<cuda>.lock, then
# benchmarks/bench_gpu.py at batch 2048, 16384 and 65536. Within 8
# minutes: the install gets 150 s, the runs what is left less 90 s (a model run is killed
# after 60 s), and an install that overruns stops the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_GPU:-.venv-gpu}
TOTAL_S=480
RUNS_S=300

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "make bench-gpu: no NVIDIA GPU here (nvidia-smi finds none); nothing run" >&2
  exit 2
fi
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
cuda=$([ "${driver%%.*}" -ge 580 ] && echo cuda13 || echo cuda12)
jax_version=$(sed -n 's/^jax==//p' requirements.lock)
echo "bench-gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), driver" \
     "$driver: jax[$cuda]==$jax_version into $VENV"

start=$SECONDS
install_s=$((TOTAL_S - RUNS_S - 30))
timeout "$install_s" bash -c "
  test -x $VENV/bin/python || $PYTHON -m venv $VENV
  $VENV/bin/pip install -q --disable-pip-version-check -r requirements.lock \
      -r benchmarks/requirements-$cuda.lock 'jax[$cuda]==$jax_version'
  $VENV/bin/pip install -q --disable-pip-version-check --no-deps -e .
" || { echo "make bench-gpu: the install did not finish within $install_s s" >&2; exit 1; }
echo "bench-gpu: installed in $((SECONDS - start)) s"
budget=$((TOTAL_S - (SECONDS - start) - 90))
"$VENV/bin/python" -m benchmarks.bench_gpu --budget_s "$budget" "$@"
