"""MAP of the NumPyro model: ``fit_map`` picks the profile solver or optax Adam on minus the
model's log joint (compiled chunks of steps, no device sync per step).
"""

import sys
import time
from collections.abc import Callable
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from tqdm.auto import tqdm

from gpbayes.infer.init import spectral_params
from gpbayes.infer.profile import fit_profile
from gpbayes.model import initial_params, log_density
from gpbayes.problem import Problem
from gpbayes.results import MapFit
from gpbayes.spec import Recipe, load_inference
from gpbayes.stops import Stop


def objective_fn(problem: Problem, jitter: float) -> Callable[[dict], Array]:
    """params -> minus the model's log joint."""
    return lambda params: -log_density(problem, params, jitter)[0]


def resolve_optimizer(problem: Problem, recipe: Recipe) -> str:
    """'auto' is the profile solver (every problem: plain, with observations, noise
    settings or unknowns; dense in 1-D, matrix-free CG otherwise)."""
    return "profile" if recipe.optimizer == "auto" else recipe.optimizer


def make_optimizer(recipe: Recipe) -> optax.GradientTransformation:
    return optax.adam(recipe.learning_rate)


def make_runner(problem: Problem, recipe: Recipe) -> tuple:
    """A compiled function (params, opt_state, n) -> (params, opt_state) doing n steps."""
    objective = objective_fn(problem, recipe.jitter)
    opt = make_optimizer(recipe)
    grad = jax.grad(objective)

    def body(_, carry):
        params, state = carry
        updates, state = opt.update(grad(params), state, params)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def run(params, state, n):
        return jax.lax.fori_loop(0, n, body, (params, state))

    return opt, run


def make_diagnostics(problem: Problem, jitter: float) -> Callable:
    """A compiled function params -> (objective, equation residual rms, boundary rms)."""

    @jax.jit
    def diagnostics(params):
        lp, trace = log_density(problem, params, jitter)
        r = trace["residual"]["value"]
        b = trace["boundary_gap"]["value"]
        b_rms = jnp.sqrt(jnp.mean(b**2)) if b.size else jnp.zeros(())
        return -lp, jnp.sqrt(jnp.mean(r**2)), b_rms

    return diagnostics


def fit_map(problem: Problem, recipe: Recipe | None = None, steps: int | None = None,
            progress: bool | None = None, params: dict | None = None, resume=None,
            interrupt: Callable[[], str | None] | None = None) -> MapFit:
    """Maximise the model's log joint; returns a MapFit.

    ``recipe`` is a Recipe (default: ``Recipe()``, the packaged map.toml);
    ``steps`` overrides its step count; ``progress`` forces the bar on or off (default:
    on when stderr is a terminal); ``params`` starts from given site values instead of
    the recipe's start. Adam runs only: ``resume`` is a checkpoint (``gpbayes.checkpoint``)
    to continue from; ``interrupt`` is a callable checked between chunks, returning a
    reason to stop (e.g. a signal's name) or None.
    """
    recipe = recipe or load_inference()
    if steps:
        recipe = replace(recipe, steps=int(steps))
    optimizer = resolve_optimizer(problem, recipe)
    if optimizer == "profile":
        return fit_profile(problem, recipe, progress, interrupt)
    if params is None:
        # 'auto' falls back to the paper's start: from the spectral start (long length
        # scales) Adam stalls on 2-D grids (measured on poisson2d-sin6cos20).
        spectral = recipe.init == "spectrum" and recipe.optimizer == "adam"
        params = spectral_params(problem, recipe.rho_scales[0]) if spectral \
            else initial_params(problem)
    return _fit_adam(problem, recipe, progress, params, resume, interrupt or (lambda: None))


MAX_JITTER_RETRIES = 6


def _fit_adam(problem, recipe, progress, params, resume, interrupt):
    start = time.perf_counter()

    def compiled(recipe):  # the step loop and the diagnostics for this recipe's jitter
        opt, run = make_runner(problem, recipe)
        return opt, run, make_diagnostics(problem, recipe.jitter)

    opt, run, diagnostics = compiled(recipe)
    state = opt.init(params)
    done, history, retries = 0, [], []
    if resume is not None:
        params, state = resume.params, jax.tree.unflatten(jax.tree.structure(state),
                                                          resume.opt_state)
        done, history, retries = resume.step, list(resume.history), list(resume.jitter_retries)
        if resume.jitter != recipe.jitter:
            recipe = replace(recipe, jitter=resume.jitter)
            opt, run, diagnostics = compiled(recipe)
    stop, stats = Stop.STEP_BUDGET, {}
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=recipe.steps, initial=done, disable=not show, desc=problem.name,
              unit="step", file=sys.stderr) as bar:
        while done < recipe.steps:
            reason = interrupt()
            if reason:
                stop, stats = Stop.INTERRUPTED, {"signal": reason, "step": done}
                break
            n = min(recipe.chunk, recipe.steps - done)
            new_params, new_state = run(params, state, n)
            obj, r_rms, b_rms = (float(v) for v in diagnostics(new_params))
            if not np.isfinite(obj):
                if len(retries) < MAX_JITTER_RETRIES:  # e.g. a failed factorization
                    retries.append({"step": done, "jitter": recipe.jitter * 10})
                    recipe = replace(recipe, jitter=recipe.jitter * 10)
                    opt, run, diagnostics = compiled(recipe)
                    continue
                stop, stats = Stop.NON_FINITE, {"step": done + n, "retries": len(retries),
                                                "jitter": recipe.jitter, "kept": done}
                break
            params, state = new_params, new_state
            done += n
            history.append({"step": done, "objective": obj, "equation_residual_rms": r_rms,
                            "boundary_rms": b_rms, "time_s": time.perf_counter() - start})
            bar.update(n)
            bar.set_postfix(objective=f"{obj:.4g}", residual=f"{r_rms:.3g}")
    jax.block_until_ready(params)
    fit = MapFit(problem=problem, params={k: np.asarray(v) for k, v in params.items()},
                 recipe=recipe, steps=done, wall_time_s=time.perf_counter() - start,
                 stop=stop, stop_stats=stats, converged=False, history=history,
                 objective=history[-1]["objective"] if history else None,
                 jitter_retries=retries)
    fit.opt_state = [np.asarray(x) for x in jax.tree.leaves(state)]
    return fit
