"""The persistent compilation cache: on by default in the user's cache folder, off on
request."""

import os
import subprocess
import sys

SCRIPT = ("import jax, jax.numpy as jnp, gpbayes\n"
          "print(gpbayes.compilation.cache_folder())\n"
          "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((3, 3))).block_until_ready()\n")


def run(tmp_path, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("JAX_COMPILATION_CACHE_DIR", "GPBAYES_COMPILATION_CACHE")}
    environ.update(XDG_CACHE_HOME=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_cache_is_on_in_the_users_cache_folder(tmp_path):
    r = run(tmp_path)
    folder = tmp_path / "gpbayes" / "jax"
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(folder) and any(folder.iterdir())


def test_cache_can_be_turned_off(tmp_path):
    r = run(tmp_path, GPBAYES_COMPILATION_CACHE="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None" and not (tmp_path / "gpbayes").exists()
