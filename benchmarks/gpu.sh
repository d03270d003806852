#!/usr/bin/env bash
# GPU figures for issue 3: step times and the 2-D cases, default recipe against the paper
# protocol's per-step cost. Runs in about 5 minutes on one H100/H200 (jax with CUDA,
# numpyro and optax preinstalled; tqdm, arviz and matplotlib needed as well).
#
#     bash benchmarks/gpu.sh [ADAM_STEPS]      # default 5000 Adam steps for 2-D cases
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-5000}"
python -c "import jax; print(jax.devices())"
python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python benchmarks/step_time.py --json "${OUT:-.}/step_time_gpu.json"
timeout 420 python benchmarks/time_to_accuracy.py poisson2d-sin100 poisson2d-sin6cos20 \
    advection-beta200 allencahn2d-multiscale poisson1d-sin100 --adam-steps "$steps" \
    --json "${OUT:-.}/time_to_accuracy_gpu.json"
