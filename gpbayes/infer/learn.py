"""Kernel learning: the kernel parameters and precisions that maximise the log joint
with U solved out (variable projection), inside a box.

The log weights are free (flat in log w: the Jeffreys prior, which prunes components).
Length scales lie between MIN_SPACINGS grid spacings (a shorter kernel fools the
midpoint check) and an upper bound past which the kernel matrix is too ill-conditioned
at the recipe's jitter (``kernels.Family.longest``); frequencies between 0 and a
quarter of the grid's sampling rate. The box is part of the recipe (a constrained MAP of
the same model).

The objective is noisy at the kernel's scale (K near singular at the jitter: a 1e-6 change
of a log length moves it by about 1 in 1e4 on suite g07), so the zoom line search often
fails its Wolfe conditions; LINESEARCH_STEPS caps what a failed search spends (10 took
67 U solves for 10 steps on g07 and doubled the learning's time on small 1-D inverse
problems; benchmarks/journal.md).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import Array

from gpbayes import kernels
from gpbayes.conditional import Conditional
from gpbayes.model import axis_site_names
from gpbayes.problem import Problem

MIN_SPACINGS = 2.0
LINESEARCH_STEPS = 4  # zoom line-search evaluations per L-BFGS step, at most


def bounds(problem: Problem) -> dict:
    """{site: (lo, hi)} for the bounded kernel sites (log rho and mu per axis)."""
    fam = kernels.family(problem.family)
    out = {}
    for j, v in enumerate(problem.variables):
        lo, hi = problem.domain[j]
        h = (hi - lo) / (problem.domain_grid[j] - 1)
        out[f"log_rho_{v}"] = (fam.log_rho(fam.longest * (hi - lo)),
                               fam.log_rho(MIN_SPACINGS * h))
        out[f"mu_{v}"] = (0.0, 0.25 / h)
    return out


def clip(problem: Problem, theta: dict) -> dict:
    """theta with the bounded sites moved just inside their box (a start may lie out)."""
    out = dict(theta)
    for name, (lo, hi) in bounds(problem).items():
        if name in out:
            pad = 1e-6 * (hi - lo)
            out[name] = jnp.clip(out[name], lo + pad, hi - pad)
    return out


def _free(problem, theta):
    box = bounds(problem)
    out = {}
    for k, x in theta.items():
        if k in box:
            lo, hi = box[k]
            p = (x - lo) / (hi - lo)
            x = jnp.log(p) - jnp.log1p(-p)
        out[k] = x
    return out


def _bounded(problem, free):
    box = bounds(problem)
    return {k: box[k][0] + (box[k][1] - box[k][0]) * jax.nn.sigmoid(x) if k in box else x
            for k, x in free.items()}


def kernel_sites(problem: Problem) -> list[str]:
    """The kernel's site names, every axis."""
    return [n for j in range(problem.ndim) for n in axis_site_names(problem, j)]


def update(problem: Problem, theta: dict, log_tau: dict, solve_u: Callable[[dict], Array],
           jitter: float, cap: float, iterations: int) -> tuple:
    """(theta, log_tau, U) after ``iterations`` L-BFGS steps of variable projection
    (traceable): the objective is minus the log joint at U*(theta, tau) = ``solve_u(values)``,
    U re-solved exactly at every evaluation, so its gradient is the partial one at fixed
    U* (the envelope theorem: d/dU vanishes at U*). The precisions are searched below
    ``cap`` (log tau). Kept only if the log joint rose and every value is finite, so a
    failed line search changes nothing."""
    sites = dict(theta, **log_tau)

    def values_of(free):
        out = _bounded(problem, free)
        return {k: cap - jax.nn.softplus(x) if k.startswith("log_tau") else x
                for k, x in out.items()}

    def objective(free):
        values = values_of(free)
        u = solve_u(jax.lax.stop_gradient(values))  # no derivative through the solve
        return -Conditional(problem, values, jitter).log_joint(u)

    opt = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(
        LINESEARCH_STEPS, initial_guess_strategy="one"))
    value_and_grad = optax.value_and_grad_from_state(objective)

    def body(carry):
        i, x, state, _, last, first = carry
        value, grad = value_and_grad(x, state=state)
        step, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=objective)
        first = jnp.where(i == 0, value, first)
        return i + 1, optax.apply_updates(x, step), state, last, value, first

    def more(carry):  # stop early once a step changes the objective at rounding level
        i, _, _, before, last, _ = carry
        return (i < iterations) & ~(jnp.abs(before - last) <= 1e-12 * jnp.abs(last))

    x0 = _free(problem, sites)
    x0 = {k: jnp.log(jnp.expm1(jnp.maximum(cap - x, 1e-9))) if k.startswith("log_tau") else x
          for k, x in x0.items()}
    inf = jnp.asarray(jnp.inf)
    start = (0, x0, opt.init(x0), jnp.asarray(jnp.nan), inf, inf)
    _, x, state, _, _, old = jax.lax.while_loop(more, body, start)
    new = optax.tree_utils.tree_get(state, "value")  # the line search's value at x
    moved = values_of(x)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(moved)]))
    better = jnp.isfinite(new) & (new < old) & finite  # a NaN step is never kept
    out = jax.tree.map(lambda a, b: jnp.where(better, a, b), moved, values_of(x0))
    return ({k: out[k] for k in theta}, {k: out[k] for k in log_tau},
            solve_u(out))
