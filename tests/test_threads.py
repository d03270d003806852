"""The BLAS thread limit of the command line and the examples: on unless the user's
environment sets a thread count."""

import os
import subprocess
import sys

import pytest

PROBE = ("from gpbayes.threads import limit_blas_threads; import threadpoolctl; "
         "done = limit_blas_threads(); "
         "print(done, max(i['num_threads'] for i in threadpoolctl.threadpool_info() "
         "if i['user_api'] == 'blas'))")


def probe(**env_vars):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_vars)
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_limits_blas_to_one_thread():
    assert probe() == ["True", "1"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to tell")
def test_the_users_setting_wins():
    assert probe(OPENBLAS_NUM_THREADS="2") == ["False", "2"]


def test_start_workers_follow_the_environment(monkeypatch):
    from gpbayes.errors import SpecError
    from gpbayes.threads import start_workers

    monkeypatch.setenv("GPBAYES_START_WORKERS", "3")
    assert start_workers() == 3
    monkeypatch.setenv("GPBAYES_START_WORKERS", "two")
    with pytest.raises(SpecError, match="GPBAYES_START_WORKERS: expected a whole number"):
        start_workers()
    monkeypatch.delenv("GPBAYES_START_WORKERS")
    assert start_workers() >= 1
