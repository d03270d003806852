"""The persistent compilation cache: on by default in the user's cache folder, off on
request."""

import os
import subprocess
import sys

SCRIPT = ("import jax, jax.numpy as jnp, gpbayes\n"
          "print(gpbayes.compilation.cache_folder())\n"
          "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((3, 3))).block_until_ready()\n")


def run(tmp_path, script=SCRIPT, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("JAX_COMPILATION_CACHE_DIR", "GPBAYES_COMPILATION_CACHE")}
    environ.update(XDG_CACHE_HOME=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environ, timeout=300)


def test_cache_is_on_in_the_users_cache_folder(tmp_path):
    r = run(tmp_path)
    folder = tmp_path / "gpbayes" / "jax"
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(folder) and any(folder.iterdir())


def test_cache_can_be_turned_off(tmp_path):
    r = run(tmp_path, GPBAYES_COMPILATION_CACHE="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None" and not (tmp_path / "gpbayes").exists()


SWEEP = ("import jax, gpbayes\n"
         "from gpbayes.conditional import Conditional\n"
         "from gpbayes.gauss_newton import rotated_basis\n"
         "from gpbayes.infer.init import spectral_params\n"
         "p = gpbayes.load_model({model!r})\n"
         "values = {{k: v for k, v in spectral_params(p, 0.3).items() if k != 'U'}}\n"
         "jax.jit(lambda v: rotated_basis(Conditional(p, v, 3e-11)).e)(values)\n")


def test_the_cg_path_is_written_to_the_cache(tmp_path, root):
    """The U solve's rotated basis (in every 2-D/3-D sweep) is traced, not a host
    callback: jax writes no compiled function with a host callback to the cache, and
    every run compiled its sweeps again."""
    r = run(tmp_path, SWEEP.format(model=str(root / "models" / "poisson2d-sin6cos20.toml")))
    assert r.returncode == 0, r.stderr
    assert any(f.name.startswith("jit__lambda") for f in (tmp_path / "gpbayes" / "jax").iterdir())
