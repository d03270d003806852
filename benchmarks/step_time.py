"""Time one paper-protocol Adam step (the model's full log joint and its gradient).

Prints ms per step for gpbayes on 1-D (N = 400) and 2-D grids (100^2, 200^2, 400^2),
and, in the same run, the reference algorithm's step on the 1-D case: the dense N x N
kernel built pair by pair with autodiff derivatives, LU solves and slogdet (the approach of
the GP-HM reference code, re-implemented here as a baseline). Run with
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OPENBLAS_NUM_THREADS=1`` on a small CPU.

    python benchmarks/step_time.py [--quick] [--json FILE]
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gpbayes as gb
from gpbayes.infer.map import make_runner
from gpbayes.model import initial_params


def time_gpbayes(problem, steps):
    recipe = gb.load_inference("inference/map-adam.toml")
    opt, run = make_runner(problem, recipe)
    params = initial_params(problem)
    state = opt.init(params)
    params, state = jax.block_until_ready(run(params, state, 2))  # compile + warm up
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        params, state = jax.block_until_ready(run(params, state, steps))
        best = min(best, (time.perf_counter() - t) / steps)
    return best * 1e3


def time_pairwise_baseline(problem, steps):
    """The reference algorithm on a 1-D Poisson problem: N^2 autodiff kernel pairs, LU."""
    x = jnp.asarray(problem.axes[0])
    n = x.shape[0]
    f = jnp.asarray(problem.source_values)
    g = jnp.asarray(problem.boundary_values)
    q, lam = problem.components, problem.boundary_weight

    def kappa(a, b, p):
        d = jnp.abs(a - b)
        s = jnp.sqrt(5.0) * d * jnp.exp(p["log_rho"])
        m = (1 + s + s**2 / 3) * jnp.exp(-s)
        return jnp.sum(jnp.exp(p["log_w"]) * m * jnp.cos(2 * jnp.pi * d * p["mu"]))

    x1 = jnp.repeat(x, n)
    x2 = jnp.tile(x, n)

    def loss(p):
        k = jax.vmap(kappa, (0, 0, None))(x1, x2, p).reshape(n, n) + 1e-6 * jnp.eye(n)
        kxx = jax.vmap(jax.grad(jax.grad(kappa)), (0, 0, None))(x1, x2, p).reshape(n, n)
        kinv_u = jnp.linalg.solve(k, p["u"])
        uxx = kxx @ kinv_u
        prior = -0.5 * jnp.linalg.slogdet(k)[1] - 0.5 * jnp.sum(p["u"] * kinv_u)
        bgap = jnp.sum((p["u"][jnp.array([0, n - 1])] - g) ** 2)
        egap = jnp.sum((uxx - f) ** 2)
        bll = 0.5 * 2 * p["lt"] - 0.5 * jnp.exp(p["lt"]) * bgap
        ell = 0.5 * n * p["lv"] - 0.5 * jnp.exp(p["lv"]) * egap
        return -(prior + lam * bll + ell)

    opt = optax.adam(0.01)

    @jax.jit
    def step(p, s):
        gr = jax.grad(loss)(p)
        up, s = opt.update(gr, s, p)
        return optax.apply_updates(p, up), s

    p = {"log_w": jnp.full(q, np.log(1 / q)), "log_rho": jnp.zeros(q),
         "mu": jnp.linspace(0, problem.max_frequency, q), "u": jnp.zeros(n),
         "lt": 0.0, "lv": 0.0}
    s = opt.init(p)
    p, s = jax.block_until_ready(step(p, s))
    t = time.perf_counter()
    for _ in range(steps):
        p, s = step(p, s)
    jax.block_until_ready(p)
    return (time.perf_counter() - t) / steps * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip 400^2 and the baseline")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind}; host: {platform.processor() or '?'} "
          f"{os.cpu_count()} cpus; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
    rows = []
    p1 = gb.load_model("models/poisson1d-sin100.toml")
    ms = time_gpbayes(p1, 200)
    rows.append({"case": "1-D N=400", "gpbayes_ms": ms})
    print(f"1-D N=400        gpbayes {ms:8.2f} ms/step")
    if not args.quick:
        base = time_pairwise_baseline(p1, 3)
        rows[0]["baseline_ms"] = base
        print(f"1-D N=400        pairwise baseline {base:8.1f} ms/step   ratio {base / ms:6.0f}x")
    p2 = gb.load_model("models/poisson2d-sin100.toml")
    sizes = (100, 200) if args.quick else (100, 200, 400)
    for n in sizes:
        prob = gb.Problem(**{**_fields(p2), "grid": (n, n), "test_grid": (n, n)})
        steps = {100: 50, 200: 20, 400: 5}[n]
        ms = time_gpbayes(prob, steps)
        rows.append({"case": f"2-D {n}^2", "gpbayes_ms": ms})
        print(f"2-D {n}x{n:<8} gpbayes {ms:8.2f} ms/step")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": f"{dev.platform} {dev.device_kind}", "rows": rows}, fh, indent=2)


def _fields(problem):
    keys = ("name", "variables", "domain", "grid", "equation", "faces", "test_grid", "solution",
            "source", "boundary_value", "constants", "family", "components", "max_frequency",
            "boundary_weight", "description", "origin")
    return {k: getattr(problem, k) for k in keys}


if __name__ == "__main__":
    main()
