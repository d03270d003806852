"""MapFit: the result of a MAP run, its metrics and checks (all from the ``Conditional``
at its parameters), ArviZ conversion and files.
"""

import json
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from gpbayes.conditional import Conditional, axis_params
from gpbayes.io import import_arviz, write_atomic, write_json

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


@dataclass(eq=False)
class MapFit:
    problem: object
    params: dict
    recipe: object
    steps: int
    wall_time_s: float
    stop_reason: str
    converged: bool
    history: list = field(default_factory=list)
    objective: float = None  # minus the log joint at params, as the fitter tracked it
    jitter_retries: list = field(default_factory=list)  # [{"step", "jitter"}] after failures
    opt_state: list = None  # optimiser state leaves (Adam), for checkpoints
    kernel_learned: bool = True  # False when the kernel parameters were held at their start
    candidates: list = field(default_factory=list)  # profile: every start, its check, objective

    @property
    def failed(self) -> bool:
        return self.stop_reason.startswith("non-finite")

    @property
    def interrupted(self) -> bool:
        return self.stop_reason.startswith("interrupted")

    @cached_property
    def conditional(self) -> Conditional:
        """The model at this fit's hyperparameters."""
        return Conditional(self.problem, self.params, self.recipe.jitter)

    @property
    def u(self) -> jax.Array:
        return jnp.asarray(self.params["U"])

    def predict_grid(self, axes) -> np.ndarray:
        """The conditional mean on the tensor grid spanned by ``axes`` (one array per axis)."""
        axes = tuple(jnp.asarray(x, dtype=jnp.float64) for x in axes)
        return np.asarray(_predict_grid(self.problem, self.recipe.jitter, self.params, axes))

    def predict(self, points) -> np.ndarray:
        """The conditional mean at scattered points (M, d), or (M,) in 1-D: shape (M,)."""
        points = np.asarray(points, dtype=float).reshape(len(points), -1)
        return np.asarray(self.conditional.predict(self.u, points))

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
        mid = tuple(0.5 * (x[1:] + x[:-1]) for x in p.axes)
        return {k: float(v) for k, v in _check_values(p, self.recipe.jitter, self.params, mid,
                                                p.source_on(mid)).items()}

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
    def boundary_rms(self) -> float:
        """The rms of U - g on the boundary faces (0 without faces)."""
        return self._checks["boundary"]

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
            "converged": self.converged,
            "stop_reason": self.stop_reason,
            "device": f"{dev.platform}: {dev.device_kind}",
            "grid": list(p.grid),
            "family": p.family,
            "recipe": {k: getattr(self.recipe, k) for k in ("optimizer", "learning_rate",
                                                            "steps", "jitter")},
            "jitter_retries": self.jitter_retries,
            "tau_e": _tau(self.params, "log_tau_e"),
            "tau_b": _tau(self.params, "log_tau_b"),
            "unknowns": {n: float(v) for n, v in self.conditional.unknowns.items()},
            "spectrum": self.spectrum(),
            "live_components": live_components(p, self.params),
            "kernel_learned": self.kernel_learned,
            "candidates": self.candidates,
        }

    def to_arviz(self) -> "arviz.InferenceData":
        """ArviZ InferenceData: the MAP point as a one-draw posterior, with named dims."""
        az = import_arviz()
        p = self.problem
        grid_dims = list(p.variables)
        test_dims = [f"{v}_test" for v in p.variables]
        posterior = {"u": self.params["U"][None, None], "u_test": self.test_prediction[None, None]}
        for name in ("log_tau_e", "log_tau_b", *p.unknown_sites.values()):
            if name in self.params:
                posterior[name] = np.asarray(self.params[name])[None, None]
        dims = {"u": grid_dims, "u_test": test_dims}
        coords = {v: x for v, x in zip(p.variables, p.axes)}
        coords.update({f"{v}_test": x for v, x in zip(p.variables, p.test_axes)})
        coords["component"] = np.arange(p.components)
        for j, v in enumerate(p.variables):
            for name in axis_params(p, self.params, j):
                posterior[f"{name}_{v}"] = np.asarray(self.params[f"{name}_{v}"])[None, None]
                dims[f"{name}_{v}"] = ["component"]
        constant = {"source": p.source_values}
        dims["source"] = grid_dims
        if p.exact_test is not None:
            constant["u_exact_test"] = p.exact_test
            dims["u_exact_test"] = test_dims
        return az.from_dict(posterior=posterior, constant_data=constant, coords=coords,
                            dims=dims, attrs={"name": p.name, "method": "map",
                                              "summary": json.dumps(self.summary())})

    def save(self, out_dir: str | Path, figures: bool = True) -> dict:
        """Write summary.json, result.nc and the PNG figures into out_dir (atomically each)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        write_json(out / "summary.json", summary)
        idata = self.to_arviz()
        write_atomic(out / "result.nc", lambda f: idata.to_netcdf(str(f)))
        if figures:
            from gpbayes import plots  # matplotlib loads only when figures are drawn

            plots.save_all(self, out)
        return summary


@partial(jax.jit, static_argnums=(0, 1))
def _predict_grid(problem, jitter: float, params: dict, axes: tuple) -> jax.Array:
    return Conditional(problem, params, jitter).predict_grid(params["U"], axes)


@partial(jax.jit, static_argnums=(0, 1))
def _check_values(problem, jitter: float, params: dict, mid: tuple, f_mid) -> dict:
    """The fit's residual checks in one compiled call (eager, each small op compiles on
    its own: seconds per start)."""
    cond = Conditional(problem, params, jitter)
    u = params["U"]
    r_mid = cond.residual_on(u, mid, f_mid)
    scale = jnp.maximum(jnp.sqrt(jnp.mean(f_mid**2)), 1.0)
    b = cond.boundary_difference(u)
    return {"equation": jnp.sqrt(jnp.mean(cond.residual(u) ** 2)),
            "midpoint": jnp.sqrt(jnp.mean(r_mid**2)) / scale,
            "boundary": jnp.sqrt(jnp.mean(b**2)) if b.size else jnp.zeros(())}


def _tau(params, name):
    return float(np.exp(params[name])) if name in params else None
