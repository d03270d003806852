"""Numerical faults, interruption and reproducibility."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import gpbayes as gb
from conftest import paper_recipe, small_problem
from gpbayes import checkpoint


def test_failed_factorization_retries_with_larger_jitter():
    p = small_problem(n=80, family="se", components=3, max_frequency=0.5)
    fit = gb.fit_map(p, paper_recipe(jitter=1e-16, chunk=20), steps=60, progress=False)
    assert fit.jitter_retries and fit.jitter_retries[0]["jitter"] == pytest.approx(1e-15)
    assert fit.steps == 60 and not fit.failed
    assert fit.recipe.jitter == pytest.approx(fit.jitter_retries[-1]["jitter"])
    assert fit.summary()["jitter_retries"] == fit.jitter_retries


def test_same_seed_same_result_bit_for_bit():
    p = small_problem()
    a = gb.fit_map(p, paper_recipe(chunk=25), steps=100, progress=False)
    b = gb.fit_map(p, paper_recipe(chunk=25), steps=100, progress=False)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert np.array_equal(a.test_prediction, b.test_prediction)


def test_resume_in_process_equals_uninterrupted():
    p = small_problem()
    recipe = paper_recipe(chunk=25, steps=200)
    calls = []

    def stop_after_two_chunks():
        calls.append(1)
        return "test" if len(calls) > 2 else None

    part = gb.fit_map(p, recipe, progress=False, interrupt=stop_after_two_chunks)
    assert part.interrupted and part.steps == 50
    whole = gb.fit_map(p, recipe, progress=False)
    resumed = gb.fit_map(p, recipe, progress=False, resume=checkpoint.Checkpoint(
        params=part.params, opt_state=part.opt_state, step=part.steps, history=part.history,
        jitter=part.recipe.jitter, jitter_retries=[]))
    assert resumed.steps == 200
    for k in whole.params:
        assert np.array_equal(whole.params[k], resumed.params[k]), k


def test_checkpoint_refuses_another_problem(tmp_path, root):
    p = small_problem()
    fit = gb.fit_map(p, paper_recipe(chunk=10), steps=20, progress=False)
    checkpoint.save(fit, tmp_path)
    other = gb.load_model(root / "models/poisson1d-sin100.toml")
    with pytest.raises(gb.SpecError, match="checkpoint is of small"):
        checkpoint.load(tmp_path, other, fit.recipe)
    with pytest.raises(gb.SpecError, match="learning_rate"):
        checkpoint.load(tmp_path, p, paper_recipe(chunk=10, learning_rate=0.1))
    loaded = checkpoint.load(tmp_path, p, fit.recipe)
    assert loaded.step == 20 and len(loaded.opt_state) == len(fit.opt_state)


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_resume_matches(root, tmp_path):
    """A real SIGTERM on a running `gpbayes solve`, then --resume: same result, bit for bit."""
    model = root / "models/poisson1d-sin100.toml"
    recipe = root / "inference/map-adam.toml"
    out = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
    cmd = [sys.executable, "-m", "gpbayes.cli", "solve", str(model), "--inference", str(recipe),
           "--no-figures"]
    proc = subprocess.Popen(cmd + ["--steps", "100000", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # start-up, compilation and a few hundred steps
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] is False and summary["stop"] == "interrupted"
    assert summary["stop_reason"].startswith("interrupted (SIGTERM) after step")
    stopped = summary["steps"]
    assert 0 <= stopped < 100000 and stopped % 100 == 0
    total = stopped + 200
    r = subprocess.run(cmd + ["--steps", str(total), "--resume", str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    # a few hundred Adam steps: written, but not trusted (exit 3, the check's warning)
    assert r.returncode == 3 and "trust check" in r.stderr, r.stderr
    resumed = np.load(out / "checkpoint.npz")
    problem = gb.load_model(model)
    whole = gb.fit_map(problem, gb.load_inference(recipe), steps=total, progress=False)
    assert int(json.loads((out / "summary.json").read_text())["steps"]) == total
    for k, v in whole.params.items():
        assert np.array_equal(resumed[f"param/{k}"], v), k
    jax.clear_caches()


@pytest.mark.slow
def test_sigterm_stops_sampling_at_once_even_inside_one_compiled_run(root, tmp_path):
    """A real SIGTERM on `gpbayes sample` while NUTS runs its one compiled loop (a 1-D grid
    samples in one run; here a warm-up of 10^6 iterations): the command stops within
    seconds, writes the MAP and an empty partial posterior, and exits 143."""
    recipe = tmp_path / "long.toml"
    recipe.write_text('method = "nuts"\nchains = 2\nwarmup = 1000000\ndraws = 100\n')
    out = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
    proc = subprocess.Popen([sys.executable, "-m", "gpbayes.cli", "sample",
                             str(root / "models/poisson1d-sin100.toml"), "--inference",
                             str(recipe), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "map" / "summary.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # NUTS compiling or warming up
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert time.monotonic() - sent < 20, "the signal waited for the compiled loop"
    assert "interrupted (SIGTERM) before the first draws" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop"] == "interrupted" and summary["complete"] is False
    assert (out / "map" / "result.nc").exists()
