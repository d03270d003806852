"""NUTS (numpyro.infer) on the PDE model, started at the MAP; kernel parameters held at the
MAP or (``sample_hyper``) sampled. The unknowns alone, U integrated out, on small grids
(``integrates_u``); on larger grids, where the marginal is too dear for NUTS, the unknowns
are integrated on a lattice instead (``lattice``; ``marginal.sampler`` says where); else U
in whitened coordinates with the unknowns and the Laplace mass matrix (dense, or
matrix-free beyond MAX_DENSE grid points).
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.handlers import condition
from numpyro.infer import MCMC, NUTS, init_to_value
from numpyro.infer.util import potential_energy

from gpbayes import kron
from gpbayes.conditional import Conditional, axis_params, with_factors
from gpbayes.coordinates import Whitened
from gpbayes.gauss_newton import exact_boundary_rows, woodbury_root
from gpbayes.infer import lattice
from gpbayes.infer.diagnostics import TREE_CAP_SHARE, checked_names, nuts_failures, scalar_names
from gpbayes.infer.marginal import integrates_u, marginal, sampler
from gpbayes.infer.posterior import laplace
from gpbayes.infer.solvers import MAX_DENSE
from gpbayes.io import import_arviz, write_atomic, write_json
from gpbayes.model import pde_model
from gpbayes.problem import Problem
from gpbayes.results import MapFit, fixed_sites, grid_coords
from gpbayes.stops import Note, Stop, describe

if TYPE_CHECKING:
    import arviz


STEP_FLOOR = 1e-12  # an adapted step size below this means the chains are stuck
RUN_SECONDS = 60.0  # with an interrupt to check, draws come in runs of about this long
TREE_DEPTH = 10  # NUTS's cap: 2**TREE_DEPTH - 1 leapfrog steps per draw (numpyro's default)
ONE_RUN_POINTS = 500  # up to this many grid points, no chunks: 4 x 1000 iterations at 200
# points take about 20 s with compilation (benchmarks/journal.md): not worth an interrupt check


@dataclass
class NutsResult:
    problem: object
    fit: object  # the MAP it started from
    samples: dict  # site -> array (chains, draws, ...)
    u_test: np.ndarray  # (chains, draws, *test_grid)
    extra: dict  # sample stats (chains, draws)
    wall_time_s: float
    chains: int
    stop: Stop = Stop.DRAWS
    stop_stats: dict = field(default_factory=dict)  # draws, signal; the notes' numbers
    path: str = "joint"  # how it sampled: a ``stops.PATHS`` code
    notes: tuple = ()  # ``stops.Note`` warnings

    @property
    def interrupted(self) -> bool:
        return self.stop is Stop.INTERRUPTED

    @property
    def stop_reason(self) -> str:
        """The stop, the path and the notes in words (``stops.describe``)."""
        return describe(self.stop, self.stop_stats, self.path, self.notes)

    def to_arviz(self) -> "arviz.InferenceData":
        """posterior, sample_stats, constant_data (the MAP's held hyperparameters) and, with
        observations, observed_data, log_likelihood (per observation: az.loo, az.waic,
        az.compare) and posterior_predictive; dims and coordinates as in ``grid_coords``."""
        az = import_arviz()
        p = self.problem
        dims, named = grid_coords(p)
        coords = {k: v for k, v in named.items() if not isinstance(v, tuple)}
        posterior = {"u": self.samples["U"], "u_test": self.u_test}
        for j, v in enumerate(p.variables):  # sampled hyperparameters, when they are
            for name in axis_params(p, self.fit.params, j):
                if f"{name}_{v}" in self.samples:
                    posterior[f"{name}_{v}"] = self.samples[f"{name}_{v}"]
                    dims[f"{name}_{v}"] = ["component"]
        for name in ("log_tau_e", "log_tau_b"):
            if name in self.samples:
                posterior[name] = self.samples[name]
        for name, site in p.unknown_sites.items():
            posterior[name] = (self.samples[site] if site == name
                               else np.exp(self.samples[site]))
        constant = {}
        for j, v in enumerate(p.variables):  # the hyperparameters, held at the MAP
            for name, value in axis_params(p, self.fit.params, j).items():
                constant[f"map_{name}_{v}"] = np.asarray(value)
                dims[f"map_{name}_{v}"] = ["component"]
        coords["component"] = np.arange(p.components)
        for name in ("log_tau_e", "log_tau_b"):
            if name in self.fit.params:
                constant[f"map_{name}"] = np.asarray(self.fit.params[name])
                dims[f"map_{name}"] = []
        if p.exact_test is not None:
            constant["u_exact_test"] = p.exact_test
            dims["u_exact_test"] = dims["u_test"]
        stats = {"diverging": self.extra["diverging"], "energy": self.extra["energy"],
                 "n_steps": self.extra["num_steps"],
                 "step_size": self.extra["adapt_state.step_size"]} if self.extra else None
        data = self._observation_groups(dims, coords, named) if p.observations else {}
        idata = az.from_dict(posterior=posterior, sample_stats=stats, constant_data=constant,
                             coords=coords, dims=dims, **data,
                             attrs={"name": p.name, "method": "nuts", "path": self.path,
                                    "wall_time_s": self.wall_time_s,
                                    "stop": str(self.stop), "stop_reason": self.stop_reason})
        for group in idata.groups():  # the grid's coordinates along the index dims
            ds = idata[group]
            ds = ds.assign_coords({k: v for k, v in named.items()
                                   if isinstance(v, tuple) and v[0] in ds.dims})
            setattr(idata, group, ds)
        return idata

    @property
    def integrates_u(self) -> bool:
        return self.path.startswith(("marginal", "lattice"))

    def mean_fit(self) -> MapFit:
        """The MAP with U and the sampled sites at their posterior means (what the trust
        check judges where U is integrated out: the joint MAP's U counts the source as
        evidence)."""
        return self.fit.at({k: np.mean(v, axis=(0, 1)) for k, v in self.samples.items()
                            if k in self.fit.params})

    def observations_mean(self) -> np.ndarray:
        """u at the observation points for every draw: (chains, draws, M)."""
        p, fit = self.problem, self.fit
        points = jnp.asarray(p.observations[0])
        varying = [k for k in self.samples if k in fit.params and k != "U"]
        flat = {k: jnp.asarray(self.samples[k]).reshape(-1, *self.samples[k].shape[2:])
                for k in [*varying, "U"]}
        held = with_factors(p, fit.params, fit.recipe.jitter)

        def mean(draw):
            cond = held if not varying else Conditional(p, {**fit.params, **draw},
                                                        fit.recipe.jitter)
            return cond.predict(draw["U"], points)

        return np.asarray(jax.lax.map(mean, flat)).reshape(*self.u_test.shape[:2], -1)

    def _observation_groups(self, dims, coords, named) -> dict:
        points, data, noise = self.problem.observations
        mean = self.observations_mean()
        noise = np.broadcast_to(np.asarray(noise, float), np.shape(data))
        rng = np.random.default_rng(0)
        dims["observations"] = ["observation"]
        coords["observation"] = np.arange(len(data))
        for j, v in enumerate(self.problem.variables):
            named[f"{v}_observation"] = ("observation", np.asarray(points)[:, j])
        return {"observed_data": {"observations": np.asarray(data)},
                "log_likelihood": {"observations": np.asarray(
                    dist.Normal(mean, noise).log_prob(np.asarray(data)))},
                "posterior_predictive": {"observations": mean + noise * rng.standard_normal(
                    mean.shape)}}


def sample_nuts(problem: Problem, init: MapFit, chains: int = 4, warmup: int = 500,
                draws: int = 500, seed: int = 0, progress: bool = True,
                chain_method: str | None = None, chunk: int | None = None,
                interrupt: Callable[[], str | None] | None = None,
                sample_hyper: bool = False) -> "NutsResult":
    """NUTS from the MAP ``init`` (a MapFit); returns a NutsResult (``.to_arviz()``).

    Draws come in chunks of ``chunk`` per chain (default: all at once without
    ``interrupt`` or on grids of at most ``ONE_RUN_POINTS``, else as many as take about
    ``RUN_SECONDS`` at the warm-up's pace; each chunk is one ``MCMC.run``, which costs a
    compilation); ``interrupt`` (a callable returning a reason or None) is checked between
    chunks, and an interrupted run returns the draws so far with ``stop_reason`` saying so.
    """
    if chunk is None and (interrupt is None or problem.size <= ONE_RUN_POINTS):
        chunk = draws
    if sample_hyper:
        return _sample_with_hyper(problem, init, chains, warmup, draws, seed, progress,
                                  chain_method)
    if integrates_u(problem):
        return _sample_marginal(problem, init, chains, warmup, draws, seed, progress,
                                chain_method, chunk, interrupt)
    if sampler(problem) == "lattice":
        return sample_lattice(problem, init, chains, draws, seed, progress, interrupt)
    if problem.size > MAX_DENSE:
        return _sample_matrix_free(problem, init, chains, warmup, draws, seed, progress,
                                   chain_method, chunk, interrupt)
    keep = tuple(problem.unknown_sites.values())
    latent, r, _, cond = laplace(problem, init, keep=keep)
    r_inv = jax.scipy.linalg.solve_triangular(r, jnp.eye(r.shape[0]), lower=False)
    inverse_mass = r_inv @ r_inv.T  # (R^T R)^{-1}, symmetric positive definite by construction
    # cond (the kernel's factors, computed once) is held fixed by the model
    model = condition(partial(pde_model, problem, jitter=init.recipe.jitter, whiten=True,
                              held=cond), data=fixed_sites(init, keep))
    # the latent sites (Z, the unknowns) are all unconstrained: the potential is minus the
    # model's log density, compiled once (numpyro's model path replays the model eagerly)
    potential = jax.jit(partial(potential_energy, model, (), {}))
    kernel = NUTS(potential_fn=potential, dense_mass=True, inverse_mass_matrix=inverse_mass,
                  adapt_mass_matrix=False, target_accept_prob=0.8, max_tree_depth=TREE_DEPTH)
    mcmc = _mcmc(kernel, chains, warmup, chain_method, progress, "vectorized", draws)
    start = _chain_start(latent, chains)
    samples, extra, stop, wall = _run_in_chunks(mcmc, jax.random.PRNGKey(seed), draws, chunk,
                                                interrupt, init_params=start)
    z = jnp.asarray(samples.get("Z", np.zeros((chains, 0, *problem.grid))))
    grid_and_test = jax.jit(lambda z: (cond.to_grid(Whitened(z)),
                                       cond.predict_grid(Whitened(z), problem.test_axes)))
    samples["U"], u_test = map(np.asarray, grid_and_test(z))  # one compiled call
    return NutsResult(problem, init, samples, u_test, extra, wall, chains,
                      **_with_notes(stop, extra))


def _chain_start(values: dict, chains: int) -> dict:
    """numpyro's init_params: the same values for each chain (no chain axis for one)."""
    return {k: jnp.broadcast_to(v, ((chains,) if chains > 1 else ()) + v.shape)
            for k, v in values.items()}


def _sample_marginal(problem, init, chains, warmup, draws, seed, progress, chain_method,
                     chunk, interrupt) -> "NutsResult":
    """NUTS on the unknowns' marginal (``marginal.Marginal``: U integrated out, the kernel
    and precisions held at the MAP), then one draw of U from its Gaussian given each draw
    of the unknowns: exact where the PDE is linear in U, a Laplace approximation
    elsewhere. The dense mass matrix starts at the inverse Hessian of the potential at
    the MAP and adapts in warm-up."""
    sites = tuple(problem.unknown_sites.values())
    m = marginal(problem, init)
    inverse_mass = jnp.linalg.inv(m.laplace(steps=0)[1])
    if not bool(jnp.all(jnp.isfinite(jnp.linalg.cholesky(inverse_mass)))):
        inverse_mass = jnp.eye(len(sites))  # not positive definite at the MAP: adapt from I
    kernel = NUTS(potential_fn=m.potential, dense_mass=True, inverse_mass_matrix=inverse_mass,
                  target_accept_prob=0.8, max_tree_depth=TREE_DEPTH)
    # one chain after another: a vmapped QR (vectorized chains) is far slower on the CPU
    mcmc = _mcmc(kernel, chains, warmup, chain_method, progress, draws=draws)
    start = _chain_start(m.theta, chains)
    samples, extra, stop, wall = _run_in_chunks(mcmc, jax.random.PRNGKey(seed), draws, chunk,
                                                interrupt, init_params=start)
    shape = (chains, len(extra.get("diverging", np.zeros((chains, 0)))[0]))

    def draw(x):  # z ~ N(z*, (R^T R)^{-1}) given the unknowns
        mode, r = m.u_given(x["theta"])
        z = mode + jax.scipy.linalg.solve_triangular(r, x["xi"], lower=False).reshape(
            problem.grid)
        return m.held.to_grid(Whitened(z)), m.held.predict_grid(Whitened(z), problem.test_axes)

    u, u_test = np.zeros(shape + problem.grid), np.zeros(shape + problem.test_grid)
    if shape[1]:
        start_draws = time.perf_counter()
        xs = {"theta": {k: jnp.asarray(samples[k]).reshape(-1) for k in sites},
              "xi": jax.random.normal(jax.random.PRNGKey(seed + 1),
                                      (shape[0] * shape[1], problem.size))}
        u, u_test = (np.asarray(a).reshape(shape + a.shape[1:])
                     for a in _map_on_devices(draw, xs))
        wall += time.perf_counter() - start_draws
    samples["U"] = u
    out = _with_notes(stop, extra, "marginal" if m.linear else "marginal_laplace")
    if m.tau_e:
        out["stop_stats"]["tau_e"] = m.tau_e
    return NutsResult(problem, m.fit, samples, u_test, extra, wall, chains, **out)


def sample_lattice(problem: Problem, init: MapFit, chains: int = 4, draws: int = 500,
                   seed: int = 0, progress: bool = False, interrupt=None) -> "NutsResult":
    """The unknowns integrated on a lattice (``lattice.sample``: U integrated out), as
    ``chains`` x ``draws`` independent draws; no NUTS statistics."""
    m = marginal(problem, init)
    draws = min(draws, lattice.DRAWS)
    out = lattice.sample(m, chains, draws, seed, progress, interrupt)
    path = "lattice" if m.linear else "lattice_laplace"
    grid = out.get("lattice")
    if grid is None:  # interrupted before the lattice was whole
        return NutsResult(problem, init, {}, np.zeros((chains, 0) + problem.test_grid), {},
                          out["wall_time_s"], chains, Stop.INTERRUPTED,
                          {"signal": interrupt(), "draws": 0, "before_draws": True}, path)
    stats = {"draws": draws, "nodes": len(grid.index), "passes": out["passes"],
             "step": grid.step, "max_nodes": lattice.MAX_NODES, "drop": lattice.DROP,
             "marginal": "dense" if m.u_map is None else "matrix-free",
             "phases_s": {k: round(v, 2) for k, v in out["phases"].items()}}
    return NutsResult(problem, init, {**out["samples"], "U": out["U"]}, out["u_test"], {},
                      out["wall_time_s"], chains, Stop.DRAWS, stats, path,
                      (Note.LATTICE_CAPPED,) if grid.capped else ())


def _map_on_devices(f: Callable, xs):
    """``lax.map(f, xs)`` over the leading axis, split across the local devices (one per
    chain where ``gpbayes sample`` set them up) when they divide it."""
    devices, n = jax.local_device_count(), len(jax.tree.leaves(xs)[0])
    if devices == 1 or n % devices:
        return jax.lax.map(jax.jit(f), xs)
    split = jax.tree.map(lambda a: a.reshape(devices, n // devices, *a.shape[1:]), xs)
    out = jax.pmap(lambda x: jax.lax.map(f, x))(split)
    return jax.tree.map(lambda a: a.reshape(n, *a.shape[2:]), out)


def _sample_matrix_free(problem, init, chains, warmup, draws, seed, progress, chain_method,
                        chunk, interrupt) -> "NutsResult":
    """NUTS on grids beyond the dense Laplace factor: no grid-sized matrix is formed.

    The latent is x = (w, t), an affine map of the Laplace approximation's coordinates
    (constant Jacobian, so the target is the model's posterior unchanged):
    unknowns theta = theta0 + C t with C C^T = S^{-1} (S: their Schur complement, U
    integrated out), and U = E s with s = s0 - (theta - theta0) H^{-1}J_s^T J_theta + F w,
    H = I + J^T J the Gauss-Newton operator in its rotated eigen-whitened coordinates s
    (``gauss_newton``), F F^T the inverse of CG's preconditioner (H's diagonal with the
    boundary rows exact: ``woodbury_root``; the diagonal alone beyond
    ``gauss_newton.MAX_CAPACITANCE`` rows). The potential is
    minus the log joint; NUTS adapts a diagonal mass in warm-up on top.
    """
    fixed = fixed_sites(init)
    jitter, tol, maxiter = init.recipe.jitter, 1e-8, init.recipe.cg_max_iterations
    sites = list(problem.unknown_sites.values())

    @jax.jit
    def setup(u):
        gn = Conditional(problem, fixed, jitter).gauss_newton(u)
        if not sites:
            return gn.basis, gn.s0, gn.inner, gn.diagonal, jnp.zeros(0), \
                jnp.zeros((0,) + problem.grid), jnp.zeros((0, 0))
        schur, h_cols, _, _ = gn.eliminate_unknowns(tol, maxiter)
        root = jnp.linalg.inv(jnp.linalg.cholesky(schur)).T  # C C^T = S^{-1}
        th0 = jnp.stack([fixed[k] for k in sites])
        return gn.basis, gn.s0, gn.inner, gn.diagonal, th0, h_cols, root

    basis, s0, inner, diagonal, th0, h_cols, root = setup(jnp.asarray(init.params["U"]))
    held = with_factors(problem, fixed, jitter)
    if problem.conditions and exact_boundary_rows(problem):
        spread = woodbury_root(held, basis, inner)  # the boundary rows exactly, as in PCG
    else:
        spread = lambda w: w / jnp.sqrt(diagonal)  # noqa: E731

    def unpack(x):
        th = th0 + root @ x["t"] if sites else th0
        s = s0 - jnp.tensordot(th - th0, h_cols, axes=1) + spread(x["w"])
        return s, th

    def potential(x):
        s, th = unpack(x)
        cond = held.with_values(dict(zip(sites, th)))
        r = cond.data_residual(kron.kron_apply(basis.e, s))
        return 0.5 * (jnp.sum(s**2) + jnp.sum(r**2) + jnp.sum(cond.prior_residual**2))

    lead = (chains,) if chains > 1 else ()  # numpyro's init_params: one per chain
    start = {"w": jnp.zeros(lead + problem.grid)}
    if sites:
        start["t"] = jnp.zeros(lead + (len(sites),))
    kernel = NUTS(potential_fn=jax.jit(potential), target_accept_prob=0.8,
                  max_tree_depth=TREE_DEPTH)
    mcmc = _mcmc(kernel, chains, warmup, chain_method, progress, draws=draws)
    x, extra, stop, wall = _run_in_chunks(mcmc, jax.random.PRNGKey(seed), draws, chunk,
                                          interrupt, init_params=start)
    shape = (chains, len(extra.get("diverging", np.zeros((chains, 0)))[0]))

    def draw(x):
        s, th = unpack(x)
        u = kron.kron_apply(basis.e, s)
        return u, th, held.predict_grid(u, problem.test_axes)

    u, th, u_test = (np.zeros(shape + problem.grid), np.zeros(shape + (len(sites),)),
                     np.zeros(shape + problem.test_grid))
    if shape[1]:
        flat = {k: jnp.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in x.items()}
        u, th, u_test = (np.asarray(a).reshape(shape + a.shape[1:])
                         for a in jax.lax.map(draw, flat))
    samples = {"U": u, **{k: th[..., i] for i, k in enumerate(sites)}}
    return NutsResult(problem, init, samples, u_test, extra, wall, chains,
                      **_with_notes(stop, extra, "matrix_free"))


FIELDS = ("diverging", "energy", "num_steps", "adapt_state.step_size")


def _mcmc(kernel, chains: int, warmup: int, chain_method, progress,
          fallback: str = "sequential", draws: int = 1000) -> MCMC:
    """numpyro's MCMC; chain_method None: parallel where there are a device per chain, else
    ``fallback`` ("vectorized" for small dense models: the chains' steps in lockstep, one
    vmapped call, measured 2.5x faster than one chain after another on 2 cores)."""
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= chains else fallback
    return MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method=chain_method, progress_bar=progress)


def _run_in_chunks(mcmc: MCMC, key, draws: int, chunk: int | None, interrupt,
                   init_params=None) -> tuple:
    """Warm-up and ``draws``: in one compiled loop where ``chunk`` >= ``draws``, else
    warm-up, then ``chunk`` draws per run (None: about ``RUN_SECONDS`` at the warm-up's
    pace). Each run is ``_interruptible``: an interrupt stops the sampler at once, with
    the draws of the runs that finished. Returns (samples, extra fields, (stop, its
    stats), wall time). The model's arguments are bound in the kernel, none passed here."""
    start = time.perf_counter()
    parts, extras, done, stop = [], [], 0, (Stop.DRAWS, {"draws": draws})

    def collect(*args, **kwargs):
        def work():
            mcmc.run(*args, extra_fields=FIELDS, **kwargs)
            out = mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(group_by_chain=True)
            box.append(jax.block_until_ready(out))  # dispatch is asynchronous: time it all

        box = []
        reason = _interruptible(work, interrupt)
        if not reason:
            parts.append(box[0][0]), extras.append(box[0][1])
        return reason

    def warm_up():
        mcmc.warmup(key, extra_fields=FIELDS, init_params=init_params)
        jax.block_until_ready(mcmc.post_warmup_state)

    if chunk is not None and chunk >= draws:  # each run compiles numpyro's loop anew
        reason = collect(key, init_params=init_params)  # mcmc made with draws samples
        done = 0 if reason else draws
    else:
        reason = _interruptible(warm_up, interrupt)
        if chunk is None and not reason:  # the pace includes a compilation: an upper bound
            pace = (time.perf_counter() - start) / max(mcmc.num_warmup, 1)
            chunk = max(50, int(RUN_SECONDS / pace))
        mcmc.num_samples = min(chunk or draws, draws)
    while done < draws and not reason:
        reason = collect(mcmc.post_warmup_state.rng_key)
        if not reason:
            done += mcmc.num_samples
            mcmc.post_warmup_state = mcmc.last_state
    if reason:
        stop = (Stop.INTERRUPTED, {"signal": reason, "draws": done,
                                   **({} if parts else {"before_draws": True})})
    wall = time.perf_counter() - start

    def joined(chunks):
        if not chunks:
            return {}
        return {k: np.concatenate([np.asarray(c[k]) for c in chunks], axis=1)[:, :draws]
                for k in chunks[0]}

    return joined(parts), joined(extras), stop, wall


POLL_SECONDS = 0.2  # how often a sampler's run in its worker thread checks for an interrupt
_WORKERS: list[threading.Thread] = []


def _interruptible(work: Callable[[], None], interrupt) -> str | None:
    """Run ``work`` (numpyro's warm-up or run: one compiled loop that no signal stops).
    With ``interrupt``, checked first, ``work`` runs in a worker thread while this one
    checks ``interrupt`` every POLL_SECONDS: its reason is returned as soon as it gives
    one, the work left running (``worker_running``: a command then ends the process
    without waiting for it). Else None once the work is done (its exception raised here)."""
    if interrupt is None:
        work()
        return None
    reason = interrupt()
    if reason:
        return reason
    done, errors = threading.Event(), []

    def run():
        try:
            work()
        except BaseException as e:  # noqa: BLE001 (raised again in the caller's thread)
            errors.append(e)
        finally:
            done.set()

    _WORKERS[:] = [t for t in _WORKERS if t.is_alive()]  # keep only those still running
    _WORKERS.append(threading.Thread(target=run, daemon=True, name="nuts-run"))
    _WORKERS[-1].start()
    while not done.wait(POLL_SECONDS):
        reason = interrupt()
        if reason:
            return reason
    if errors:
        raise errors[0]
    return None


def worker_running() -> bool:
    """True while a sampler's run left by an interrupt still runs (``_interruptible``)."""
    return any(t.is_alive() for t in _WORKERS)


def _with_notes(stop: tuple, extra: dict, path: str = "joint") -> dict:
    """NutsResult's stop, stop_stats, path and notes: ``stop`` (code, stats) with the
    sampler's warnings: the step size below STEP_FLOOR, or most draws at the tree-depth
    cap."""
    code, stats = stop
    step = float(np.min(extra.get("adapt_state.step_size", 1.0)))
    capped = float(np.mean(np.asarray(extra.get("num_steps", 0)) >= 2**TREE_DEPTH - 1))
    notes = (((Note.STEP_COLLAPSED,) if step < STEP_FLOOR else ())
             + ((Note.TREE_DEPTH,) if capped > TREE_CAP_SHARE else ()))
    return {"stop": code, "path": path, "notes": notes,
            "stop_stats": {**stats, "step_size": step, "capped": capped,
                           "cap": 2**TREE_DEPTH - 1}}


def _sample_with_hyper(problem, init, chains, warmup, draws, seed, progress, chain_method):
    """NUTS over the kernel parameters and precisions too (proper priors, see
    ``gpbayes.model.hyper_prior``), with a diagonal mass matrix adapted in warm-up."""
    values = fixed_sites(init)
    z = Conditional(problem, values, init.recipe.jitter).whiten(jnp.asarray(init.params["U"]))
    start_values = {**values, "Z": z}
    model = partial(pde_model, sample_hyper=True)
    kernel = NUTS(model, init_strategy=init_to_value(values=start_values),
                  target_accept_prob=0.9, max_tree_depth=TREE_DEPTH)
    mcmc = _mcmc(kernel, chains, warmup, chain_method, progress, draws=draws)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), problem, jitter=init.recipe.jitter, whiten=True,
             extra_fields=FIELDS)
    jax.block_until_ready(mcmc.get_samples())
    wall = time.perf_counter() - start
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    hyper = [k for k in samples if k in values and not k.startswith(("log_tau",))
             and k not in problem.unknown_sites.values()]

    def u_test(draw):
        cond = Conditional(problem, draw, init.recipe.jitter)
        return cond.predict_grid(Whitened(draw["Z"]), problem.test_axes)

    flat = {k: samples[k].reshape(-1, *samples[k].shape[2:]) for k in hyper + ["Z"]}
    ut = np.asarray(jax.lax.map(u_test, flat)).reshape(chains, draws, *problem.test_grid)
    return NutsResult(problem, init, samples, ut, extra, wall, chains,
                      **_with_notes((Stop.DRAWS, {"draws": draws}), extra, "hyper"))


def save(result: "NutsResult", out_dir: str | Path, recipe: str = "") -> tuple:
    """posterior.nc (ArviZ), summary.csv (az.summary) and summary.json into out_dir
    (``recipe``: the sampling recipe's file, stated in the summary). The summary's
    ``converged`` and ``failures`` are ``diagnostics.nuts_failures``'s verdict."""
    az = import_arviz()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result.u_test.shape[1] == 0:
        summary = {"name": result.problem.name, "method": "nuts", "complete": False,
                   "converged": False, "failures": ["no draws"],
                   "stop": str(result.stop), "stop_reason": result.stop_reason,
                   "draws_per_chain": 0}
        write_json(out / "summary.json", summary)
        return summary, None
    idata = result.to_arviz()
    write_atomic(out / "posterior.nc", lambda f: idata.to_netcdf(str(f)))
    checked = checked_names(idata)
    table = az.summary(idata, var_names=checked + ["u_test"], round_to="none")  # sd may be 1e-4
    write_atomic(out / "summary.csv", lambda f: table.to_csv(f))
    u = table.loc[[i for i in table.index if i.startswith("u_test")]]
    failures = nuts_failures(table, checked, result.extra, result.chains, 2**TREE_DEPTH - 1)
    if Note.LATTICE_CAPPED in result.notes:
        failures.append(f"the unknowns' lattice reached its cap of {lattice.MAX_NODES} nodes")
    summary = {
        "name": result.problem.name, "method": "nuts", "chains": result.chains,
        "stop": str(result.stop), "path": result.path, "notes": list(result.notes),
        "stop_reason": result.stop_reason, "complete": not result.interrupted,
        "converged": not failures and not result.interrupted, "failures": failures,
        "draws_per_chain": int(result.u_test.shape[1]), "wall_time_s": result.wall_time_s,
        "divergences": int(result.extra["diverging"].sum()) if result.extra else 0,
        "mean_leapfrog_steps": (float(result.extra["num_steps"].mean()) if result.extra
                                else None),
        "u_test_max_r_hat": float(u["r_hat"].max()),
        "u_test_min_ess_bulk": float(u["ess_bulk"].min()),
        "ess_bulk_per_s": float(u["ess_bulk"].min() / result.wall_time_s),
        "unknowns": {n: table.loc[n].to_dict() for n in scalar_names(result.problem, idata)},
        "map_rel_l2_error": result.fit.rel_l2_error,
        "map_check_passed": result.fit.check["passed"],
        "recipe": recipe,
        **({"posterior_mean_check": result.mean_fit().check} if result.integrates_u else {}),
    }
    if "tau_e" in result.stop_stats:
        summary["tau_e"] = result.stop_stats["tau_e"]
    if result.path.startswith("lattice"):
        summary["lattice"] = {k: result.stop_stats[k] for k in
                              ("nodes", "passes", "step", "drop", "marginal", "phases_s")}
    write_json(out / "summary.json", summary)
    return summary, table.loc[[i for i in table.index if not i.startswith("u_test")]]
