"""Checkpoints of an Adam run (``DIR/checkpoint.npz``): parameters, optimiser state, step,
history and what the run was, so that ``--resume DIR`` ends at the same result, bit for bit.
"""

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from gpbayes.errors import SpecError
from gpbayes.io import write_atomic
from gpbayes.results import MapFit
from gpbayes.stops import Stop

NAME = "checkpoint.npz"


@dataclass
class Checkpoint:
    params: dict
    opt_state: list
    step: int
    history: list
    jitter: float
    jitter_retries: list
    family: str | None = None  # the fit's kernel (the profile solver may keep a plain family)
    components: int | None = None


def save(fit: MapFit, out_dir: str | Path) -> None:
    """Write DIR/checkpoint.npz (atomically); the optimiser state is there for Adam fits."""
    arrays = {f"param/{k}": v for k, v in fit.params.items()}
    arrays.update({f"state/{i:04d}": v for i, v in enumerate(fit.opt_state or [])})
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(fit.recipe).items()}
    meta = {"name": fit.problem.name, "grid": list(fit.problem.grid), "step": fit.steps,
            "history": fit.history, "jitter": fit.recipe.jitter,
            "jitter_retries": fit.jitter_retries, "recipe": recipe,
            "family": fit.problem.family, "components": fit.problem.components}
    arrays["meta"] = np.array(json.dumps(meta))

    def write(path):
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    write_atomic(Path(out_dir) / NAME, write)


def map_fit(ckpt: Checkpoint, problem, recipe) -> MapFit:
    """A MapFit at a checkpoint's parameters (to sample from without re-running the MAP),
    with the checkpoint's kernel family."""
    if ckpt.family and (ckpt.family, ckpt.components) != (problem.family, problem.components):
        problem = problem.with_kernel(ckpt.family, ckpt.components)
    return MapFit(problem=problem, params=ckpt.params, recipe=replace(recipe, jitter=ckpt.jitter),
                  steps=ckpt.step, wall_time_s=0.0, stop=Stop.LOADED,
                  converged=False, history=ckpt.history, jitter_retries=ckpt.jitter_retries)


def load(out_dir: str | Path, problem, recipe) -> Checkpoint:
    """Read DIR/checkpoint.npz and check that it belongs to this problem and recipe."""
    path = Path(out_dir) / NAME
    try:
        data = np.load(path)
        meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as err:
        raise SpecError(f"no readable checkpoint ({err})", path) from None
    if meta["name"] != problem.name or meta["grid"] != list(problem.grid):
        raise SpecError(f"checkpoint is of {meta['name']} on grid {meta['grid']}, not of "
                        f"{problem.name} on {list(problem.grid)}", path, "--resume")
    for key in ("optimizer", "learning_rate", "chunk"):
        if meta["recipe"][key] != getattr(recipe, key):
            raise SpecError(f"checkpoint was made with {key} = {meta['recipe'][key]!r}, the "
                            f"recipe now says {getattr(recipe, key)!r}", path, "--resume")
    params = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("param/")}
    state = [data[k] for k in sorted(k for k in data.files if k.startswith("state/"))]
    return Checkpoint(params=params, opt_state=state, step=int(meta["step"]),
                      history=meta["history"], jitter=float(meta["jitter"]),
                      jitter_retries=meta["jitter_retries"], family=meta.get("family"),
                      components=meta.get("components"))
