#!/usr/bin/env bash
# GPU figures for issue 3: step times, then the 2-D cases and poisson1d-sin100 with the
# default recipe (the profile solver; matrix-free CG in 2-D) against the paper protocol's
# measured per-step cost. One H100/H200 (jax with CUDA, numpyro and optax preinstalled;
# tqdm, arviz and matplotlib needed as well). At most 8 minutes: each case runs under its
# own time limit, so a slow case is reported as timed out and the rest still run.
#
#     bash benchmarks/gpu.sh [SECONDS_PER_CASE]      # default 90
set -uo pipefail
cd "$(dirname "$0")/.."
limit="${1:-90}"
out="${OUT:-.}"
python -c "import jax; print(jax.devices())"
python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 60 python benchmarks/step_time.py --json "$out/step_time_gpu.json"
for case in poisson1d-sin100 poisson2d-sin6cos20 advection-beta200 poisson2d-sin100 \
        allencahn2d-multiscale; do
    timeout "$limit" python benchmarks/time_to_accuracy.py "$case" \
        --json "$out/time_to_accuracy_gpu_$case.json" \
        || echo "$case: stopped after $limit s (exit $?)"
done
