"""The unknowns' marginal, U integrated out (``pde_model(..., marginal=True)``, the kernel
and precisions held at the MAP): its potential (what NUTS samples), its Laplace
approximation (the Gaussian posterior's unknowns) and U's Gaussian given the unknowns.
Exact where the PDE is linear in U; elsewhere linearised at U's mode given the PDE.
"""

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array
from jax.flatten_util import ravel_pytree
from numpyro.handlers import condition
from numpyro.infer.util import potential_energy

from gpbayes.conditional import Conditional, with_factors
from gpbayes.model import LAPLACE_STEPS, pde_model
from gpbayes.problem import Problem
from gpbayes.results import MapFit, fixed_sites

MARGINAL_MAX = 500  # grid points: NUTS samples the marginal (dense, O(N^3) per evaluation)
LAPLACE_MAX = 4000  # grid points: the Gaussian posterior's unknowns take the marginal's
# Laplace approximation (a few dense evaluations: 1.4 s each on a 50 x 50 grid here)
START_STEPS = 10  # Gauss-Newton steps to U's mode given the PDE at the MAP (nonlinear PDEs)
NEWTON_STEPS = 6  # Newton steps on the unknowns to the marginal's mode (from the MAP's)


def integrates_u(problem: Problem, limit: int | None = None) -> bool:
    """Whether the unknowns are inferred alone, U integrated out: there are unknowns and
    the grid has at most ``limit`` points (default MARGINAL_MAX, NUTS's; the Laplace
    approximation's is LAPLACE_MAX)."""
    return bool(problem.unknowns) and problem.size <= (MARGINAL_MAX if limit is None
                                                       else limit)


@dataclass(frozen=True)
class Marginal:
    """``potential``: minus the log marginal density at a dict of the unknowns' sites
    (compiled); ``theta``: their MAP values; ``held``: the Conditional at the MAP."""

    problem: Problem
    held: Conditional
    linear: bool
    z_start: Array | None  # U's mode given the PDE at the MAP (whitened), if nonlinear
    theta: dict
    potential: object

    def u_given(self, theta: dict) -> tuple[Array, Array]:
        """U's Gaussian given the unknowns, whitened: (mode z*, R), R^T R its precision."""
        cond = self.held.with_values(theta)
        at = None if self.linear else cond.pde_mode(self.z_start, LAPLACE_STEPS)
        mode, root, _ = cond.u_given_rest(at)
        return mode, root

    def laplace(self, steps: int = NEWTON_STEPS) -> tuple[dict, Array]:
        """The marginal's mode (``steps`` Newton steps with the exact Hessian from the
        MAP's values, a step halved while it does not lower the potential) and the
        Hessian there; ``steps=0``: the Hessian at the MAP."""
        flat, unravel = ravel_pytree(self.theta)
        f = jax.jit(lambda x: self.potential(unravel(x)))
        grad, hessian = jax.jit(jax.grad(f)), jax.jit(jax.hessian(f))
        for _ in range(steps):
            step, t, now = jnp.linalg.solve(hessian(flat), grad(flat)), 1.0, f(flat)
            while not bool(f(flat - t * step) <= now) and t > 1e-3:
                t /= 2
            flat = flat - t * step if t > 1e-3 else flat
        return unravel(flat), hessian(flat)

    def spread(self, theta: dict, root: Array) -> tuple[Array, Array, Array]:
        """U's Laplace posterior, whitened: (z* and R of its Gaussian given the unknowns
        at ``theta``, and the slope of z* in them times their covariance's ``root``): the
        covariance of z is (R^T R)^{-1} + S S^T for that last part S."""
        flat, unravel = ravel_pytree(theta)
        mode, r = self.u_given(theta)
        slope = jax.jacfwd(lambda x: self.u_given(unravel(x))[0].reshape(-1))(flat)
        return mode, r, slope @ root


def marginal(problem: Problem, fit: MapFit) -> Marginal:
    """The unknowns' marginal at the MAP ``fit`` (its kernel and precisions held)."""
    sites = tuple(problem.unknown_sites.values())
    jitter = fit.recipe.jitter
    held = with_factors(problem, fixed_sites(fit), jitter)
    linear = held.is_linear()
    at_map = jax.jit(partial(held.pde_mode, steps=START_STEPS))
    z_start = None if linear else at_map(held.whiten(jnp.asarray(fit.params["U"])))
    model = condition(partial(pde_model, problem, jitter=jitter, held=held, marginal=True,
                              start=z_start), data=fixed_sites(fit, sites))
    theta = {k: jnp.asarray(fit.params[k]) for k in sites}
    return Marginal(problem, held, linear, z_start, theta,
                    jax.jit(partial(potential_energy, model, (), {})))
