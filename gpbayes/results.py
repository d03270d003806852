"""MapFit: the result of a MAP run, its metrics and checks (all from the ``Conditional``
at its parameters), ArviZ conversion and files.
"""

import json
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from gpbayes.conditional import Conditional, axis_params, unknown_values
from gpbayes.coordinates import Coordinates, Whitened
from gpbayes.io import import_arviz, write_atomic, write_groups, write_json
from gpbayes.stops import Stop, describe

if TYPE_CHECKING:
    import arviz

LIVE = 1e-3  # a kernel component is live when its weight exceeds LIVE x its axis's largest


def live_components(problem, params: dict) -> dict:
    """{axis: how many kernel components carry weight above LIVE x the largest}."""
    out = {}
    for v in problem.variables:
        w = np.exp(np.asarray(params[f"log_w_{v}"]))
        out[v] = int(np.sum(w > LIVE * w.max()))
    return out


Z_AXES = 3  # ``MapFit.latent``: predict from z on grids of this many axes or more

KERNEL_WHY = ("adam", "learned", "off", "passed", "large", "diagonal", "worse", "interrupted",
              "failed")
"""Why a fit's kernel was learned or held (``MapFit.kernel_why``; the command line words
each): Adam learns it with the rest; the profile solver learned it from the chosen start;
or held it there because learning is off (learn_iterations = 0), the chosen start passed
(its check at or below refine_above), the grid is above learn_max_points, the boundary
rows are by their diagonal (``policy.diagonal_rows``: each trial solve costs about 1000
CG iterations; on three 3-D problems learning took 4-6x the rest of the solve and gained
nothing, benchmarks/journal.md), learning did not
raise the log joint without worsening the check, the run was interrupted first, or no
start ended with a finite log joint."""


def fixed_sites(fit: "MapFit", keep: tuple = ()) -> dict:
    """The MAP values of every site but U (and those in ``keep``)."""
    return {k: jnp.asarray(v) for k, v in fit.params.items() if k != "U" and k not in keep}


@dataclass(eq=False)
class MapFit:
    problem: object
    params: dict
    recipe: object
    steps: int
    wall_time_s: float
    stop: Stop
    converged: bool
    history: list = field(default_factory=list)
    stop_stats: dict = field(default_factory=dict)  # the stop's numbers (``stops.MESSAGES``)
    objective: float = None  # minus the log joint at params, as the fitter tracked it
    jitter_retries: list = field(default_factory=list)  # [{"step", "jitter"}] after failures
    opt_state: list = None  # optimiser state leaves (Adam), for checkpoints
    candidates: list = field(default_factory=list)  # profile: every start, its check, objective
    kernel_why: str = "adam"  # why the kernel was learned or held: a KERNEL_WHY code ("": a
    # profile run before the choice, its kernel held)
    start: dict = field(default_factory=dict)  # profile: {"chosen", "passed", "finished"}
    z: object = None  # U whitened at the fit's kernel (U = L z) as the solver computed it, or
    # None: the mean off the grid from K^{-1} U loses digits on 3-D grids, from z it does not

    @property
    def kernel_learned(self) -> bool:
        """Whether the kernel parameters were learned (else held at their start)."""
        return self.kernel_why in ("adam", "learned")

    @property
    def failed(self) -> bool:
        return self.stop is Stop.NON_FINITE

    @property
    def interrupted(self) -> bool:
        return self.stop is Stop.INTERRUPTED

    @property
    def stop_reason(self) -> str:
        """The stop in words (``stops.describe``)."""
        return describe(self.stop, self.stop_stats)

    @cached_property
    def conditional(self) -> Conditional:
        """The model at this fit's hyperparameters."""
        return Conditional(self.problem, self.params, self.recipe.jitter)

    @property
    def u(self) -> jax.Array:
        return jnp.asarray(self.params["U"])

    @property
    def latent(self) -> jax.Array | Coordinates:
        """The coordinates the conditional mean off the grid is computed from
        (``latent``)."""
        return latent(self.problem, self.u, self.z)

    def predict_grid(self, axes) -> np.ndarray:
        """The conditional mean on the tensor grid spanned by ``axes`` (one array per axis)."""
        axes = tuple(jnp.asarray(x, dtype=jnp.float64) for x in axes)
        return np.asarray(_predict_grid(self.problem, self.recipe.jitter, self.params,
                                        self.latent, axes))

    def predict(self, points) -> np.ndarray:
        """The conditional mean at scattered points (M, d), or (M,) in 1-D: shape (M,)."""
        points = np.asarray(points, dtype=float).reshape(len(points), -1)
        return np.asarray(self.conditional.predict(self.latent, points))

    @cached_property
    def test_prediction(self) -> np.ndarray:
        return self.predict_grid(self.problem.test_axes)

    @cached_property
    def rel_l2_error(self) -> float | None:
        exact = self.problem.exact_test
        if exact is None:
            return None
        return float(np.linalg.norm(self.test_prediction - exact) / np.linalg.norm(exact))

    @cached_property
    def max_abs_error(self) -> float | None:
        exact = self.problem.exact_test
        return None if exact is None else float(np.max(np.abs(self.test_prediction - exact)))

    @cached_property
    def _checks(self) -> dict:
        p = self.problem
        return {k: float(v) for k, v in _check_values(p, self.recipe.jitter, self.params,
                                                      self.latent, p.midpoint_source).items()}

    def known_checks(self, values: dict) -> "MapFit":
        """This fit, its residual checks given (``check_values`` at its state, computed
        where the state was: the profile solver's sweeps) instead of computed again."""
        self.__dict__["_checks"] = {k: float(v) for k, v in values.items()}
        return self

    @property
    def equation_residual_rms(self) -> float:
        """The rms of the PDE residual at the collocation points."""
        return self._checks["equation"]

    @property
    def midpoint_residual(self) -> float:
        """Relative rms of the PDE residual at the cell midpoints, between the collocation
        points: a check of the solution that uses the equation and source only."""
        return self._checks["midpoint"]

    @property
    def pde_check(self) -> float:
        """Rms of the PDE residual at the cell midpoints relative to the equation's largest
        term there or the source (``Conditional.term_scale``): the trust check's measure."""
        return self._checks["midpoint_terms"]

    @property
    def midpoint_rms(self) -> float:
        """Rms of the PDE residual at the cell midpoints (absolute)."""
        return self._checks["midpoint_rms"]

    @property
    def midpoint_independent(self) -> float:
        """The fraction of the midpoint residuals that count as independent (AR(1)
        effective sample size over their number, ``_independent_fraction``)."""
        return self._checks["midpoint_independent"]

    @property
    def boundary_rms(self) -> float:
        """The rms of operator[u] - g over the boundary rows (0 without conditions)."""
        return self._checks["boundary"]

    @property
    def boundary_relative(self) -> float:
        """The rms of the tempered rows' mismatch relative to the size of g or of the
        conditions' terms over the grid (``Conditional.boundary_size``; rms U for Dirichlet:
        faces where u = 0 must not turn rounding-level mismatches into large values)."""
        g = np.asarray(self.problem.boundary_values)[self.problem.tempered_rows]
        if not g.size:
            return 0.0
        size = max(np.sqrt(np.mean(g**2)), self._checks["boundary_size"], 1e-300)
        return self._checks["boundary_tempered"] / float(size)

    @property
    def boundary_z(self) -> float:
        """The rms of the noisy boundary rows' mismatch over their noise sd (0 if none)."""
        return self._checks["boundary_z"]

    def at(self, values: dict) -> "MapFit":
        """This fit with some sites at other ``values`` (U among them: its z is dropped),
        e.g. a posterior's means, whose trust check is then this one's."""
        params = {**self.params, **{k: np.asarray(v) for k, v in values.items()}}
        return replace(self, params=params, z=None if "U" in values else self.z)

    @cached_property
    def check(self) -> dict:
        """The trust check (gpbayes.trust): values, thresholds, passed, advice."""
        from gpbayes.trust import trust_check

        return trust_check(self)

    def spectrum(self) -> dict:
        """Learned kernel components per axis: weight, rho and (spectral families) mu."""
        out = {}
        for j, v in enumerate(self.problem.variables):
            p = axis_params(self.problem, self.params, j)
            comp = {"weight": np.exp(p["log_w"]).tolist(), "rho": np.exp(p["log_rho"]).tolist()}
            if "mu" in p:
                comp["mu"] = np.asarray(p["mu"]).tolist()
            out[v] = comp
        return out

    def summary(self) -> dict:
        p = self.problem
        dev = jax.devices()[0]
        return {
            "name": p.name,
            "rel_l2_error": self.rel_l2_error,
            "max_abs_error": self.max_abs_error,
            "equation_residual_rms": self.equation_residual_rms,
            "boundary_rms": self.boundary_rms,
            "steps": self.steps,
            "wall_time_s": self.wall_time_s,
            "objective": self.objective,
            "midpoint_residual": self.midpoint_residual,
            "check": self.check,
            "converged": self.converged and self.check["passed"],
            "stop": str(self.stop),
            "stop_stats": self.stop_stats,
            "stop_reason": self.stop_reason,
            "device": (dev.platform if dev.device_kind == dev.platform
                       else f"{dev.platform}: {dev.device_kind}"),
            "grid": list(p.grid),
            "ghost_points": [list(g) for g in p.ghosts],
            "family": p.family,
            "recipe": {k: getattr(self.recipe, k) for k in ("source", "description",
                                                            "optimizer", "learning_rate",
                                                            "steps", "jitter")},
            "jitter_retries": self.jitter_retries,
            "tau_e": _tau(self.params, "log_tau_e"),
            "tau_b": _tau(self.params, "log_tau_b"),
            "unknowns": {n: float(v) for n, v in unknown_values(p, self.params).items()},
            "spectrum": self.spectrum(),
            "live_components": live_components(p, self.params),
            "kernel_learned": self.kernel_learned,
            "kernel_why": self.kernel_why,
            "start": self.start,
            "candidates": self.candidates,
        }

    def to_arviz(self) -> "arviz.InferenceData":
        """ArviZ InferenceData: the MAP in a ``map`` group (a point estimate: no chain or
        draw dims, so no ``az.summary`` of one draw), the source and exact solution in
        ``constant_data``; dims and coordinates as in ``grid_coords``."""
        return import_arviz().InferenceData(**self.groups())

    def groups(self) -> dict:
        """``to_arviz``'s groups as xarray Datasets: {"map": ..., "constant_data": ...}."""
        import xarray as xr

        p = self.problem
        dims, coords = grid_coords(p)
        point = {"u": (dims["u"], np.asarray(self.params["U"])),
                 "u_test": (dims["u_test"], self.test_prediction)}
        if self.z is not None:  # the predictions' coordinates (``latent``): reloads exactly
            point["u_whitened"] = (dims["u"], np.asarray(self.z))
        for name in ("log_tau_e", "log_tau_b", *p.unknown_sites.values()):
            if name in self.params:
                point[name] = ((), np.asarray(self.params[name]))
        for j, v in enumerate(p.variables):
            for name in axis_params(p, self.params, j):
                point[f"{name}_{v}"] = (("component",), np.asarray(self.params[f"{name}_{v}"]))
        constant = {"source": (dims["u"], np.asarray(p.source_values))}
        if p.exact_test is not None:
            constant["u_exact_test"] = (dims["u_test"], p.exact_test)
        attrs = {"name": p.name, "method": "map", "summary": json.dumps(self.summary())}
        coords = {**coords, "component": np.arange(p.components)}
        return {"map": xr.Dataset(point, coords=coords, attrs=attrs),
                "constant_data": xr.Dataset(constant, coords=coords)}

    def save(self, out_dir: str | Path) -> dict:
        """Write summary.json and result.nc into out_dir (atomically each); the figures
        are ``gpbayes.plots.save_all``'s."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        write_json(out / "summary.json", summary)
        groups = self.groups()
        write_atomic(out / "result.nc", lambda f: write_groups(f, groups))
        return summary


def grid_coords(problem) -> tuple[dict, dict]:
    """ArviZ dims of u and u_test and their coordinates: integer index dims (``x_index``,
    ``x_test_index``; row labels read ``u_test[3]``) with the grid's coordinates as named
    coordinates along them (``x``, ``x_test``)."""
    v = problem.variables
    dims = {"u": [f"{x}_index" for x in v], "u_test": [f"{x}_test_index" for x in v]}
    coords = {}
    for x, grid, test in zip(v, problem.axes, problem.test_axes):
        coords.update({f"{x}_index": np.arange(len(grid)), x: (f"{x}_index", np.asarray(grid)),
                       f"{x}_test_index": np.arange(len(test)),
                       f"{x}_test": (f"{x}_test_index", np.asarray(test))})
    return dims, coords


def load_fit(out_dir: str | Path, problem, recipe=None) -> MapFit:
    """The MapFit saved by ``MapFit.save`` in out_dir (result.nc and summary.json), for
    ``problem`` (its model; the saved kernel family is restored)."""
    import gpbayes as gb

    out = Path(out_dir)
    summary = json.loads((out / "summary.json").read_text())
    idata = import_arviz().from_netcdf(str(out / "result.nc"))
    if "map" in idata.groups():
        point = idata["map"]
    else:  # files of before 2026-12-02: the point as a one-draw posterior
        point = idata.posterior.isel(chain=0, draw=0)
    params = {("U" if k == "u" else k): np.asarray(v) for k, v in point.data_vars.items()
              if k != "u_test"}
    z = params.pop("u_whitened", None)
    components = len(params[f"log_w_{problem.variables[0]}"])
    if (summary["family"], components) != (problem.family, problem.components):
        problem = problem.with_kernel(summary["family"], components)
    recipe = replace(recipe or gb.load_inference(), jitter=summary["recipe"]["jitter"])
    return MapFit(problem=problem, params=params, recipe=recipe, steps=summary["steps"],
                  wall_time_s=summary["wall_time_s"],
                  stop=Stop(summary.get("stop", Stop.LOADED)),  # older files: words only
                  stop_stats=summary.get("stop_stats", {}),
                  converged=summary["converged"], objective=summary["objective"],
                  candidates=summary["candidates"], start=summary.get("start", {}),
                  kernel_why=(summary.get("kernel_why")  # older files: the flag alone
                              or ("adam" if summary["kernel_learned"] else "off")), z=z)


@partial(jax.jit, static_argnums=(0, 1))
def _predict_grid(problem, jitter: float, params: dict, c, axes: tuple) -> jax.Array:
    return Conditional(problem, params, jitter).predict_grid(c, axes)


def latent(problem, u: jax.Array, z) -> jax.Array | Coordinates:
    """The coordinates the conditional mean off the grid is computed from: z
    (``Whitened``) on grids of Z_AXES axes or more, where the solver gave it, else U.
    One mean in exact arithmetic; in floating point K^{-1} U ruins it on 3-D grids
    (three ill-conditioned axes), while on 1-D and 2-D grids z lost 40-100x in
    accuracy against U (benchmarks/journal.md, 2026-12-06, 3-D)."""
    if z is None or problem.ndim < Z_AXES:
        return u
    return Whitened(jnp.asarray(z))


@partial(jax.jit, static_argnums=(0, 1))
def _check_values(problem, jitter: float, params: dict, c, f_mid) -> dict:
    """The fit's residual checks in one compiled call (eager, each small op compiles on
    its own: seconds per start), from the coordinates c (``MapFit.latent``)."""
    return check_values(Conditional(problem, params, jitter), params["U"], c, f_mid)


def check_values(cond: Conditional, u: jax.Array, c, f_mid) -> dict:
    """The residual checks of grid values u (in the coordinates c, ``latent``'s) at the
    model ``cond``: the PDE residual on the grid and at the cell midpoints (source
    ``f_mid``), the boundary mismatch and the sizes they are relative to (traceable)."""
    problem = cond.problem
    mid = problem.midpoints
    fields = cond.fields_on(c, mid)
    res = cond.operator(fields, mid) - f_mid
    r_mid = jnp.sqrt(jnp.mean(res**2))
    f_rms = jnp.sqrt(jnp.mean(f_mid**2))
    b = cond.boundary_difference(u)
    t = problem.tempered_rows
    return {"equation": jnp.sqrt(jnp.mean(cond.residual(u) ** 2)),
            "boundary_tempered": jnp.sqrt(jnp.mean(b[t] ** 2)) if t.any() else jnp.zeros(()),
            "boundary_z": (jnp.sqrt(jnp.mean((b[~t] / problem.row_noise[~t]) ** 2))
                           if (~t).any() else jnp.zeros(())),
            "midpoint_rms": r_mid,
            "midpoint_independent": _independent_fraction(res),
            "midpoint": r_mid / jnp.maximum(f_rms, 1.0),
            "midpoint_terms": r_mid / jnp.maximum(jnp.maximum(f_rms, cond.term_scale(fields, mid)),
                                                  1e-300),
            "boundary": jnp.sqrt(jnp.mean(b**2)) if b.size else jnp.zeros(()),
            "boundary_size": cond.boundary_size(u)}


def _independent_fraction(r: jax.Array) -> jax.Array:
    """The fraction of a residual field's values that count as independent: the product
    over axes of (1 - rho) / (1 + rho), rho its lag-1 correlation along the axis (clipped
    at 0: a residual alternating in sign counts fully), the AR(1) effective sample size."""
    out = jnp.ones(())
    for j in range(r.ndim):
        a = jnp.moveaxis(r, j, 0)
        rho = jnp.clip(jnp.sum(a[1:] * a[:-1]) / jnp.maximum(jnp.sum(a * a), 1e-300), 0.0, 0.999)
        out = out * (1 - rho) / (1 + rho)
    return out


def _tau(params, name):
    return float(np.exp(params[name])) if name in params else None


def check_score(fit: MapFit) -> float:
    """Relative PDE residual at the cell midpoints plus relative boundary rms.

    Uses the equation, the source and the boundary data only (never the exact solution).
    """
    return fit.midpoint_residual + fit.boundary_relative
