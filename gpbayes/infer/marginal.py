"""The unknowns' marginal, U integrated out (``pde_model(..., marginal=True)``, the kernel
and precisions held at the MAP): its potential (what NUTS samples), its Laplace
approximation (the Gaussian posterior's unknowns) and U's Gaussian given the unknowns.
Exact where the PDE is linear in U; elsewhere linearised at U's mode given the PDE.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular
from numpyro.handlers import condition
from numpyro.infer.util import potential_energy

from gpbayes.conditional import Conditional, is_linear, with_factors
from gpbayes.coordinates import Whitened
from gpbayes.errors import NumericalError
from gpbayes.gauss_newton import rotated_basis
from gpbayes.model import LAPLACE_STEPS, MATRIX_FREE, pde_model
from gpbayes.problem import Problem
from gpbayes.results import MapFit, fixed_sites

MARGINAL_MAX = 500  # grid points: NUTS samples the marginal (dense, O(N^3) per evaluation)
LAPLACE_MAX = 4000  # grid points: the Gaussian posterior's unknowns take the marginal's
# Laplace approximation (a few dense evaluations: 1.4 s each on a 50 x 50 grid here)
START_STEPS = 10  # Gauss-Newton steps to U's mode given the PDE at the MAP (nonlinear PDEs)
NEWTON_STEPS = 6  # Newton steps on the unknowns to the marginal's mode (from the MAP's)
BATCH = 64  # U's draws per compiled call
DRAW_TOLERANCE = 1e-3  # PCG's, for a matrix-free draw of U: on inverse-advection-periodic2d
# U's sd over 64 draws is that of 1e-6 solves to 1e-5 relative, at half the iterations
STEP_TOLERANCE = 1e-4  # a Newton step this small (in the Hessian's sds, summed) ends them
TAU_RANGE = 12  # log tau_e's marginal maximum is searched within this of the MAP's, in
# steps of 1 (the evidence is flat above the precision the equation is solved to)


def integrates_u(problem: Problem, limit: int | None = None) -> bool:
    """Whether the unknowns are inferred alone, U integrated out: there are unknowns and
    the grid has at most ``limit`` points (default MARGINAL_MAX, NUTS's; the Laplace
    approximation's is LAPLACE_MAX)."""
    return bool(problem.unknowns) and problem.size <= (MARGINAL_MAX if limit is None
                                                       else limit)


def matrix_free(problem: Problem) -> bool:
    """Whether the marginal is evaluated without a matrix (``pde_model(...,
    matrix_free=True)``): unknowns on a grid beyond LAPLACE_MAX points, a PDE linear in U
    and measurements (observations or noisy boundary rows) to be their evidence."""
    noisy = problem.observations is not None or bool((~problem.tempered_rows).any())
    return (bool(problem.unknowns) and problem.size > LAPLACE_MAX and noisy
            and is_linear(problem, {n: loc for n, (_, loc, _) in problem.unknowns.items()}))


def sampler(problem: Problem) -> str:
    """How ``gpbayes sample`` (NUTS, kernel held) draws the unknowns: "nuts" on their
    marginal (up to MARGINAL_MAX points), "lattice" (its dense marginal up to LAPLACE_MAX
    points, matrix-free beyond where ``matrix_free``), else "joint" (NUTS on U with
    them); "none" without unknowns."""
    if not problem.unknowns:
        return "none"
    if integrates_u(problem):
        return "nuts"
    return "lattice" if integrates_u(problem, LAPLACE_MAX) or matrix_free(problem) else "joint"


@dataclass(frozen=True)
class Marginal:
    """``potential``: minus the log marginal density at a dict of the unknowns' sites
    (compiled); ``theta``: their MAP values; ``held``: the Conditional at the values held."""

    problem: Problem
    held: Conditional
    linear: bool
    z_start: Array | None  # U's mode given the PDE at the MAP (whitened), if nonlinear
    theta: dict
    potential: object
    u_map: Array | None = None  # the MAP's U on the grid where the marginal is matrix-free
    warm_potential: object = None  # (solves, theta) -> potential, there: from the solves
    fit: MapFit | None = None  # the MAP, with the values held (log tau_e settled)
    tau_e: dict | None = None  # ``settle_tau_e``'s result, where it ran

    def near(self, flat: np.ndarray) -> Callable[[np.ndarray], float]:
        """Flat theta -> the potential (a float). Matrix-free: its solves start from
        those at ``flat``, to the same tolerances (cheap for nearby values, no derivatives:
        the lattice's values); dense: ``potential``."""
        _, unravel = ravel_pytree(self.theta)
        if self.u_map is None:
            f = jax.jit(lambda x: self.potential(unravel(x)))
            return lambda x: float(f(jnp.asarray(x)))
        solves = _evidence_solves(self.held, self.u_map, unravel(jnp.asarray(flat)))
        return lambda x: float(self.warm_potential(solves, unravel(jnp.asarray(x))))

    def u_given(self, theta: dict) -> tuple[Array, Array]:
        """U's Gaussian given the unknowns, whitened: (mode z*, R), R^T R its precision."""
        cond = self.held.with_values(theta)
        at = None if self.linear else cond.pde_mode(self.z_start, LAPLACE_STEPS)
        mode, root, _ = cond.u_given_rest(at)
        return mode, root

    def u_draws(self, thetas: np.ndarray, node: np.ndarray, seed: int, workers: int = 1,
                interrupt=None) -> tuple | None:
        """Draws of U from its Gaussian given the measurements and the unknowns at
        ``thetas[node]`` (flat, one row per node): (U (N, *grid), u on the test grid (N,
        *test)), or None if ``interrupt`` gave a reason between nodes. Dense: from the
        factor of ``u_given`` at each node used, in compiled batches of BATCH. Matrix-free:
        U's mode at each node used, then perturbation-optimisation (``structured_posterior``),
        H^{-1} (eta + J^T xi) to DRAW_TOLERANCE, in batches of BATCH draws whose operators
        are each draw's own (vmap over the unknowns: no batch is part-empty)."""
        used = np.unique(node)
        if self.u_map is not None:
            return self._matrix_free_draws(thetas, node, used, seed, interrupt)
        p, held = self.problem, self.held
        _, unravel = ravel_pytree(self.theta)
        test = p.test_axes
        keys = jax.random.split(jax.random.PRNGKey(seed), len(used))
        factor = jax.jit(lambda x: self.u_given(unravel(x)))

        @jax.jit
        def batch(mode, r, key):
            xi = jax.random.normal(key, (BATCH, p.size))
            z = mode.reshape(-1)[:, None] + solve_triangular(r, xi.T, lower=False)
            w = Whitened(z.T.reshape((BATCH,) + p.grid))
            return held.to_grid(w), held.predict_grid(w, test)

        def work(job):
            k, rows, key = job
            if interrupt and interrupt():
                return None
            mode, r = factor(jnp.asarray(thetas[k]))
            parts = [batch(mode, r, kk) for kk in jax.random.split(key, -(-len(rows) // BATCH))]
            return rows, *(np.concatenate([np.asarray(q[j]) for q in parts])[:len(rows)]
                           for j in (0, 1))

        jobs = [(k, np.flatnonzero(node == k), key) for k, key in zip(used, keys)]
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(work, jobs))
        if any(d is None for d in done):
            return None
        u, u_test = np.zeros((len(node),) + p.grid), np.zeros((len(node),) + p.test_grid)
        for rows, grid, at_test in done:
            u[rows], u_test[rows] = grid, at_test
        return u, u_test

    def u_modes(self, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """U's mode given the measurements and the unknowns at each row of ``thetas`` (flat),
        on the grid and the test grid (matrix-free: one PCG solve each)."""
        _, unravel = ravel_pytree(self.theta)
        basis = jax.jit(rotated_basis)(self.held)
        out = [_u_mode(self.held, self.u_map, basis, unravel(jnp.asarray(x)))[2:]
               for x in thetas]
        return tuple(np.stack([np.asarray(o[j]) for o in out]) for j in (0, 1))

    def _matrix_free_draws(self, thetas, node, used, seed, interrupt) -> tuple | None:
        maxiter = MATRIX_FREE[2]
        _, unravel = ravel_pytree(self.theta)
        basis = jax.jit(rotated_basis)(self.held)
        modes = {}
        for k in used:
            if interrupt and interrupt():
                return None
            modes[k], its, _, _ = _u_mode(self.held, self.u_map, basis,
                                          unravel(jnp.asarray(thetas[k])))
            if int(its) >= maxiter:
                raise NumericalError(f"U's mode did not converge in {maxiter} PCG iterations "
                                     f"at the unknowns {np.asarray(thetas[k]).tolist()}")
        pad = np.concatenate([node, np.full(-len(node) % BATCH, node[0])])
        keys = jax.random.split(jax.random.PRNGKey(seed), len(pad) // BATCH)
        parts = []
        for start, key in zip(range(0, len(pad), BATCH), keys):
            if interrupt and interrupt():
                return None
            rows = pad[start:start + BATCH]
            batch = jax.vmap(unravel)(jnp.asarray(thetas[rows]))
            u, u_test, its = _u_draw_batch(self.held, self.u_map, basis, batch,
                                           jnp.stack([modes[k] for k in rows]), key)
            if int(its) >= maxiter:
                raise NumericalError(f"U's draws did not converge in {maxiter} PCG iterations")
            parts.append((np.asarray(u), np.asarray(u_test)))
        return tuple(np.concatenate([q[j] for q in parts])[:len(node)] for j in (0, 1))

    def laplace(self, steps: int = NEWTON_STEPS) -> tuple[dict, Array]:
        """The marginal's mode (``newton`` from the MAP's values) and the Hessian there;
        ``steps=0``: the Hessian at the MAP."""
        flat, unravel = ravel_pytree(self.theta)
        f = jax.jit(lambda x: self.potential(unravel(x)))
        flat, hessian = newton(f, flat, steps)
        return unravel(flat), hessian

    def spread(self, theta: dict, root: Array) -> tuple[Array, Array, Array]:
        """U's Laplace posterior, whitened: (z* and R of its Gaussian given the unknowns
        at ``theta``, and the slope of z* in them times their covariance's ``root``): the
        covariance of z is (R^T R)^{-1} + S S^T for that last part S."""
        flat, unravel = ravel_pytree(theta)
        mode, r = self.u_given(theta)
        slope = jax.jacfwd(lambda x: self.u_given(unravel(x))[0].reshape(-1))(flat)
        return mode, r, slope @ root


def newton(f: Callable, x: Array, steps: int = NEWTON_STEPS, args: tuple = (),
           derivatives: tuple | None = None) -> tuple:
    """``steps`` Newton steps on ``f(x, *args)`` (compiled; x a flat array) from ``x`` with
    the exact Hessian, a step halved while it does not lower f, ended early by a step
    below STEP_TOLERANCE; returns x and the Hessian there. ``derivatives``: f's compiled
    gradient and Hessian, for a caller that calls this often with one f."""
    grad, hessian = derivatives or compiled_derivatives(f)
    h = hessian(x, *args)
    for _ in range(steps):
        step, t, now = jnp.linalg.solve(h, grad(x, *args)), 1.0, f(x, *args)
        if bool(jnp.abs(step) @ jnp.sqrt(jnp.abs(jnp.diag(h))) < STEP_TOLERANCE):
            break
        while not bool(f(x - t * step, *args) <= now) and t > 1e-3:
            t /= 2
        x = x - t * step if t > 1e-3 else x
        h = hessian(x, *args)
    return x, h


def compiled_derivatives(f: Callable) -> tuple:
    """f's gradient and Hessian in its first argument, each compiled."""
    return jax.jit(jax.grad(f)), jax.jit(jax.hessian(f))


def settle_tau_e(potential: Callable, theta: dict, centre: float) -> dict:
    """log tau_e at the maximum of the measurements' evidence, the unknowns integrated
    (Laplace: minus the potential at their mode less half the log-determinant of its
    Hessian), on the integers within TAU_RANGE of ``centre``; ``potential(theta, log
    tau_e)`` is the marginal's. Returns {"log_tau_e", "map" (``centre``), "at_edge",
    "log_evidence": [[log tau_e, value or None where not finite], ...]}. Type-II maximum
    likelihood: the data settle how exactly the equation holds (a coarse grid's error
    lowers it), where a held-out cap guessed it."""
    flat, unravel = ravel_pytree(theta)
    f = jax.jit(lambda y, t: potential(unravel(y), t))
    derivatives = compiled_derivatives(f)
    out = {}
    for side in (range(0, TAU_RANGE + 1), range(-1, -TAU_RANGE - 1, -1)):
        x = flat  # each value's mode starts from its neighbour's
        for k in side:
            t = centre + k
            x, h = newton(f, x, args=(t,), derivatives=derivatives)
            sign, logdet = np.linalg.slogdet(np.asarray(h))
            value = -float(f(x, t)) - 0.5 * logdet
            out[t] = value if sign > 0 and np.isfinite(value) else -np.inf
            x = x if np.isfinite(value) else flat
    taus = sorted(out)
    best = max(taus, key=lambda t: out[t])
    if not np.isfinite(out[best]):
        raise NumericalError("the measurements' evidence is not finite at any tau_e")
    return {"log_tau_e": float(best), "map": float(centre), "at_edge": best in (taus[0], taus[-1]),
            "log_evidence": [[round(t, 3), out[t] if np.isfinite(out[t]) else None]
                             for t in taus]}


# Compiled once per problem and shape (the Conditional is an argument, its problem static),
# not once per call: the matrix-free marginal's solves, U's modes and U's draws.

@jax.jit
def _evidence_solves(held: Conditional, u_map: Array, theta: dict) -> tuple:
    """The matrix-free evidence's solves at ``theta``, to start nearby ones from."""
    return held.with_values(theta).evidence_matrix_free(u_map, *MATRIX_FREE)[3]


@jax.jit
def _u_mode(held: Conditional, u_map: Array, basis, theta: dict) -> tuple:
    """U's mode given the measurements and ``theta`` by PCG from ``u_map``: (s, PCG
    iterations, U on the grid, u on the test grid)."""
    gn = held.with_values(theta).gauss_newton(u_map, basis)
    s, its, _ = gn.step(MATRIX_FREE[0], MATRIX_FREE[2])
    u = gn.to_grid(s)
    return s, its, u, held.predict_grid(u, held.problem.test_axes)


@jax.jit
def _u_draw_batch(held: Conditional, u_map: Array, basis, theta: dict, s: Array,
                  key: Array) -> tuple:
    """BATCH draws of U, one per row of ``theta`` (dict of (BATCH,) arrays) about its mode
    ``s`` (rotated coordinates): perturbation-optimisation, H^{-1} (eta + J^T xi) to
    DRAW_TOLERANCE. Returns (U, u on the test grid, the most PCG iterations)."""
    def one(theta, s, key):
        gn, k1, k2 = held.with_values(theta).gauss_newton(u_map, basis), *jax.random.split(key)
        rhs = jax.random.normal(k1, s.shape) + gn.vjp(jax.random.normal(k2, gn.r0.shape))
        ds, k, _ = gn.solve(rhs, DRAW_TOLERANCE, MATRIX_FREE[2])
        return gn.to_grid(s + ds), k

    u, k = jax.vmap(one)(theta, s, jax.random.split(key, len(s)))
    return u, held.predict_grid(u, held.problem.test_axes), jnp.max(k)


def marginal(problem: Problem, fit: MapFit) -> Marginal:
    """The unknowns' marginal at the MAP ``fit``, its kernel and precisions held; where NUTS
    samples it (``integrates_u``) with measurements and a free tau_e, log tau_e is held
    at its marginal maximum instead (``settle_tau_e``; ``Marginal.fit`` holds it)."""
    sites = tuple(problem.unknown_sites.values())
    jitter = fit.recipe.jitter
    held = with_factors(problem, fixed_sites(fit), jitter)
    linear = held.is_linear()
    theta = {k: jnp.asarray(fit.params[k]) for k in sites}
    if matrix_free(problem):
        u_map = jnp.asarray(fit.params["U"])
        model = condition(partial(pde_model, problem, jitter=jitter, held=held, marginal=True,
                                  start=u_map, matrix_free=True), data=fixed_sites(fit, sites))
        warm = jax.jit(lambda w, v: potential_energy(model, (), {"warm": w}, v))
        return Marginal(problem, held, True, None, theta,
                        jax.jit(partial(potential_energy, model, (), {})), u_map, warm, fit)
    at_map = jax.jit(partial(held.pde_mode, steps=START_STEPS))
    z_start = None if linear else at_map(held.whiten(jnp.asarray(fit.params["U"])))
    tau_e = None
    if integrates_u(problem) and "log_tau_e" in fit.params and held.evidence_rows.any():
        free = dense_potential(fit, held, z_start, ("log_tau_e",))
        tau_e = settle_tau_e(lambda v, t: free({**v, "log_tau_e": t}), theta,
                             float(fit.params["log_tau_e"]))
        fit = fit.at({"log_tau_e": tau_e["log_tau_e"]})
        held = held.with_values({"log_tau_e": jnp.asarray(tau_e["log_tau_e"])})
    return Marginal(problem, held, linear, z_start, theta, dense_potential(fit, held, z_start),
                    fit=fit, tau_e=tau_e)


def dense_potential(fit: MapFit, held: Conditional, start: Array | None,
                    free: tuple = ()) -> Callable[[dict], Array]:
    """Minus the log density of the dense marginal (compiled) at a dict of the unknowns'
    sites and those in ``free``, the other sites at ``fit``'s values; ``held`` the
    Conditional of its kernel, ``start`` U's mode given the PDE (nonlinear PDEs)."""
    sites = tuple(fit.problem.unknown_sites.values()) + free
    model = condition(partial(pde_model, fit.problem, jitter=fit.recipe.jitter, held=held,
                              marginal=True, start=start), data=fixed_sites(fit, sites))
    return jax.jit(partial(potential_energy, model, (), {}))
