"""Model files and inference recipes (TOML) -> Problem and Recipe, with validation: every
problem is one SpecError line naming the file and the key.
"""

import csv
import difflib
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import tomllib

from gpbayes import kernels, operators
from gpbayes.errors import SpecError
from gpbayes.problem import Condition, Face, Problem

AXIS_NAMES = ("x", "y", "z", "t")
MIN_POINTS = 3
MAX_GHOST_CELLS = 16
MAX_BYTES = 16 * 2**30  # refuse grids whose working set would exceed this

_BOUNDARY_KEYS = {"faces", "operator", "value", "weight", "noise"}
_MODEL_KEYS = {
    "": {"name", "description", "pde", "grid", "kernel", "likelihood", "observations",
         "unknowns", "priors"},
    "priors": {"log_w", "log_rho", "mu", "log_tau"},
    "pde": {"variables", "domain", "equation", "solution", "source", "constants", "boundary",
            "periodic"},
    "grid": {"points", "test_points", "ghost_cells"},
    "kernel": {"family", "components", "max_frequency"},
    "likelihood": {"boundary_weight", "boundary_noise", "equation_noise"},
}
PRIORS = ("normal", "lognormal")


@dataclass(frozen=True)
class Recipe:
    """How to find the MAP (a map recipe: inference/map.toml, precise.toml, map-adam.toml;
    ``gpbayes solve``). The defaults are the packaged ``map.toml``'s (tested equal);
    ``map-adam.toml`` is the paper's Adam protocol."""

    method: str = "map"
    optimizer: str = "auto"  # the profile solver where it applies, else Adam
    learning_rate: float = 0.01
    steps: int = 5000  # Adam: steps
    jitter: float = 3e-11
    plain_jitter: float = 1e-12  # profile: the plain-family starts' jitter in 1-D (dense)
    chunk: int = 100  # steps per compiled call; progress updates between chunks
    sweeps: int = 25  # profile: alternation sweeps per start at most
    init: str = "spectrum"  # frequencies from the data's FFT, or "paper"
    rho_scales: tuple = (0.3, 0.1, 0.8, 3.0)  # profile: starting length-scale factors
    tau_max: float = 1e12  # profile: cap on the closed-form precisions
    tau_b_start: float = 1e12  # profile: starting boundary precision (capped at tau_max)
    tolerance: float = 1e-6  # profile: relative change of the log joint that stops
    gauss_newton_steps: int = 1  # profile: per sweep, for nonlinear PDEs
    learn_iterations: int = 10  # profile: L-BFGS steps on the kernel per sweep (0: held)
    learn_sweeps: int = 4  # profile: sweeps of the kernel-learning run, at most
    learn_sweeps_large: int = 1  # profile: the same on grids above solvers.MAX_DENSE points
    refine_above: float = 1e-6  # profile: plain starts and learning only above this check
    learn_max_points: int = 250000  # profile: learn the kernel on grids up to this size only
    families: tuple = ("se",)  # profile: plain kernel families also tried as candidates
    screen_sweeps: int = 2  # profile: the starts race from this many sweeps each (0: no race)
    plain_screen_sweeps: int = 1  # profile: the same for the plain starts on the dense path
    calibrate_tau_e: bool = False  # profile, with data: tau_e capped at its held-out value
    cg_tolerance: float = 1e-8  # profile: relative residual of each CG solve
    cg_max_iterations: int = 600  # profile: a CG solve's iterations at most
    description: str = ""
    source: str = ""  # the file it was read from ("" for the built-in defaults)


@dataclass(frozen=True)
class SampleRecipe:
    """How to sample the posterior (a sampling recipe: inference/nuts.toml, gaussian.toml;
    ``gpbayes sample``): the sampler, its settings and the MAP recipe it starts from.
    One class for both samplers, so ``--method`` can pick either for the same file."""

    method: str = "nuts"  # or "gaussian"
    seed: int = 0
    map: str = "map.toml"  # the MAP recipe to start from (beside this file, or packaged)
    map_jitter: float = 0.0  # the MAP's jitter instead of its recipe's (0: its)
    calibrate_tau_e: bool = False  # the MAP's free tau_e capped at its held-out value
    chains: int = 4  # nuts
    warmup: int = 500  # nuts
    draws: int = 500  # nuts: per chain
    sample_hyper: bool = False  # nuts: sample the kernel parameters and precisions too
    solver: str = "auto"  # gaussian: "dense" (<= 4000 grid points), "cg" (any grid) or auto
    samples: int = 64  # gaussian with cg: perturbation-optimisation draws for the sd
    cg_tolerance: float = 1e-10  # gaussian with cg: relative residual of the mean's solve
    cg_max_iterations: int = 20000  # gaussian with cg: a solve's iterations at most
    description: str = ""
    source: str = ""  # the file it was read from ("" for the built-in defaults)


def _types(cls) -> dict:
    """{key: TOML type} of a recipe class's fields (a tuple is read from a list)."""
    return {f.name: list if f.type is tuple else f.type for f in fields(cls)
            if f.name != "source"}


KINDS = {"map": Recipe, "nuts": SampleRecipe, "gaussian": SampleRecipe}  # method -> class
CHOICES = {"method": tuple(KINDS), "optimizer": ("adam", "profile", "auto"),
           "init": ("paper", "spectrum"), "solver": ("auto", "dense", "cg")}
POSITIVE = ("learning_rate", "jitter", "plain_jitter", "tau_max", "tau_b_start", "tolerance",
            "cg_tolerance")
NON_NEGATIVE = ("refine_above", "map_jitter")
WHOLE = ("learn_iterations", "screen_sweeps", "seed")  # >= 0; every other int field >= 1
RECIPES = Path(__file__).with_name("recipes")  # the packaged recipes (inference/ has copies)
PACKAGED = tuple(sorted(f.stem for f in RECIPES.glob("*.toml")))


def recipe_file(path: str | Path) -> Path:
    """A recipe's file: a packaged recipe by name ("map", "nuts", ...), else the path."""
    return RECIPES / f"{path}.toml" if str(path) in PACKAGED else Path(path)


def _read(path):
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(f"cannot read file ({err.strerror})", path) from None
    except UnicodeDecodeError:
        raise SpecError("not a text file", path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"malformed TOML: {err}", path) from None


def _check_keys(table, allowed, path, prefix):
    if not isinstance(table, dict):
        raise SpecError("expected a table", path, prefix or None)
    for key in table:
        if key not in allowed:
            full = f"{prefix}.{key}" if prefix else key
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"unknown key{hint}", path, full)


def _get(table, key, kind, path, full, default=None, required=False):
    if key not in table:
        if required:
            raise SpecError("is required", path, full)
        return default
    value = table[key]
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool:
        ok = isinstance(value, bool)
    if not ok:
        want = "an expression (text or number)" if isinstance(kind, tuple) else kind.__name__
        raise SpecError(f"expected {want}, got {type(value).__name__}", path, full)
    return float(value) if kind is float else value


def _check_name(name, taken, variables, path, key, what):
    """A new name for expressions: an identifier, not taken, not a function or u-derivative."""
    if not name.isidentifier() or name in taken or name in operators.FUNCTIONS \
            or operators.derivative_orders(name, variables) is not None:
        raise SpecError(f"is not a usable {what}", path, key)


def load_model(path: str | Path) -> Problem:
    """Read a model file into a Problem (raises SpecError on bad input)."""
    path = Path(path)
    data = _read(path)
    for prefix, allowed in _MODEL_KEYS.items():
        table = data
        for part in filter(None, prefix.split(".")):
            table = table.get(part, {})
        _check_keys(table, allowed, path, prefix)
    pde = _get(data, "pde", dict, path, "pde", required=True)
    variables = _get(pde, "variables", list, path, "pde.variables", required=True)
    if not 1 <= len(variables) <= 3 or len(set(variables)) != len(variables) \
            or any(v not in AXIS_NAMES for v in variables):
        raise SpecError(f"expected 1 to 3 distinct names from {list(AXIS_NAMES)}", path,
                        "pde.variables")
    d = len(variables)
    constants, bounds = _domain(pde, variables, path)

    names = set(variables) | set(constants)
    unknowns = _unknowns(data, names, variables, path)

    def expr(table, key, full, allow_u=False, required=False):
        text = _get(table, key, (str, int, float), path, full, required=required)
        if text is None:
            return None
        allowed = names | set(unknowns) if allow_u else names
        return operators.parse(text, allowed, path, full, allow_u=allow_u, variables=variables)

    equation = expr(pde, "equation", "pde.equation", allow_u=True, required=True)
    solution = expr(pde, "solution", "pde.solution")
    source = expr(pde, "source", "pde.source")
    periodic = _periodic(pde, variables, path)
    conditions = _conditions(pde, variables, periodic, names | set(unknowns), expr, path)

    grid_t = _get(data, "grid", dict, path, "grid", required=True)
    points = _points(grid_t, "points", d, path, required=True)
    test_points = _points(grid_t, "test_points", d, path) or points
    ghost_cells = _get(grid_t, "ghost_cells", int, path, "grid.ghost_cells")  # None: automatic
    if ghost_cells is not None and not 0 <= ghost_cells <= MAX_GHOST_CELLS:
        raise SpecError(f"expected a whole number from 0 to {MAX_GHOST_CELLS}", path,
                        "grid.ghost_cells")
    _check_memory(points, path)

    family, q, fmax = _kernel(data, path)
    weight, noise = _likelihood(data, path)
    observations = _observations(data.get("observations"), bounds, variables, path)
    priors = _priors(data, path)

    problem = Problem(
        name=_get(data, "name", str, path, "name", path.stem),
        description=_get(data, "description", str, path, "description", ""),
        variables=tuple(variables), domain=tuple(bounds), grid=points, test_grid=test_points,
        equation=equation, solution=solution, source=source, conditions=conditions,
        periodic=periodic, constants=constants, family=family, components=q,
        max_frequency=fmax, boundary_weight=weight, boundary_noise=noise["boundary_noise"],
        equation_noise=noise["equation_noise"], observations=observations, unknowns=unknowns,
        priors=priors, ghost_cells=ghost_cells,
        origin=str(path))
    return problem


def _domain(pde, variables, path):
    """The constants (each may use those before it) and the domain's intervals."""
    constants = {}
    for name, value in _get(pde, "constants", dict, path, "pde.constants", {}).items():
        key = f"pde.constants.{name}"
        _check_name(name, set(variables), variables, path, key, "constant name")
        constants[name] = operators.constant(value, constants, path, key)
    domain = _get(pde, "domain", list, path, "pde.domain", required=True)
    d = len(variables)
    if len(domain) != d:
        raise SpecError(f"expected {d} intervals [lo, hi], one per variable", path, "pde.domain")
    bounds = []
    for j, interval in enumerate(domain):
        key = f"pde.domain[{j}]"
        if not isinstance(interval, list) or len(interval) != 2:
            raise SpecError("expected [lo, hi]", path, key)
        lo, hi = (operators.constant(v, constants, path, key) for v in interval)
        if not lo < hi:
            raise SpecError(f"lo must be below hi (got {lo:g} >= {hi:g})", path, key)
        bounds.append((lo, hi))
    return constants, bounds


def _kernel(data, path):
    """(family, components, max_frequency) of the [kernel] table."""
    kern = _get(data, "kernel", dict, path, "kernel", {})
    family = _get(kern, "family", str, path, "kernel.family", "student-t-mixture")
    if family not in kernels.FAMILIES:
        close = difflib.get_close_matches(family, kernels.FAMILIES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(f"unknown family {family!r} ({hint}choose from "
                        + ", ".join(kernels.FAMILIES) + ")", path, "kernel.family")
    q = _get(kern, "components", int, path, "kernel.components", 30)
    if not 1 <= q <= 1000:
        raise SpecError("expected 1 to 1000 components", path, "kernel.components")
    fmax = _get(kern, "max_frequency", float, path, "kernel.max_frequency", 20.0)
    if not (math.isfinite(fmax) and fmax >= 0):
        raise SpecError("expected a finite number >= 0", path, "kernel.max_frequency")
    return family, q, fmax


def _likelihood(data, path):
    """(boundary weight, {boundary_noise, equation_noise, ...}) of [likelihood]."""
    lik = _get(data, "likelihood", dict, path, "likelihood", {})
    weight = _get(lik, "boundary_weight", float, path, "likelihood.boundary_weight", 200.0)
    noise = {}
    for key in ("boundary_weight", "boundary_noise", "equation_noise"):
        setting = _get(lik, key, float, path, f"likelihood.{key}")
        if setting is not None and not (math.isfinite(setting) and setting > 0):
            raise SpecError("expected a finite number > 0", path, f"likelihood.{key}")
        noise[key] = setting
    return weight, noise


def _priors(data, path):
    """{site: (loc, scale)} of [priors]."""
    priors = {}
    for key, pair in _get(data, "priors", dict, path, "priors", {}).items():
        if (not isinstance(pair, list) or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pair)
                or not pair[1] > 0):
            raise SpecError("expected [loc, scale] with scale > 0", path, f"priors.{key}")
        priors[key] = (float(pair[0]), float(pair[1]))
    return priors


def _unknowns(data, names, variables, path):
    """[unknowns] name = { prior = "normal" | "lognormal", loc = .., scale = .. }."""
    out = {}
    for name, spec in _get(data, "unknowns", dict, path, "unknowns", {}).items():
        key = f"unknowns.{name}"
        _check_name(name, names, variables, path, key, "name for an unknown")
        _check_keys(spec, {"prior", "loc", "scale"}, path, key)
        prior = _get(spec, "prior", str, path, f"{key}.prior", "normal")
        if prior not in PRIORS:
            raise SpecError(f"unknown prior {prior!r} (choose from {', '.join(PRIORS)})", path,
                            f"{key}.prior")
        loc = _get(spec, "loc", float, path, f"{key}.loc", required=True)
        scale = _get(spec, "scale", float, path, f"{key}.scale", required=True)
        if not (math.isfinite(loc) and math.isfinite(scale) and scale > 0):
            raise SpecError("expected a finite loc and a scale > 0", path, key)
        out[name] = (prior, loc, scale)
    return out


def _observations(tables, bounds, variables, path):
    """[[observations]] tables -> (points (M, d), values (M,), noise sd) or None.

    Each table has ``noise`` and either ``points`` and ``values`` or ``csv`` (a file,
    relative to the model file, with one column per variable and a ``value`` column).
    All tables must share one noise sd.
    """
    if tables is None:
        return None
    if not isinstance(tables, list) or not tables:
        raise SpecError("expected [[observations]] tables", path, "observations")
    points, values, noises = [], [], set()
    for i, t in enumerate(tables):
        key = f"observations[{i}]"
        _check_keys(t, {"points", "values", "noise", "csv"}, path, key)
        noise = _get(t, "noise", float, path, f"{key}.noise", required=True)
        if not (math.isfinite(noise) and noise > 0):
            raise SpecError("expected a finite number > 0", path, f"{key}.noise")
        noises.add(noise)
        if "csv" in t:
            p, v = _read_csv(path.parent / _get(t, "csv", str, path, f"{key}.csv"), variables,
                             path, f"{key}.csv")
        else:
            p = _get(t, "points", list, path, f"{key}.points", required=True)
            v = _get(t, "values", list, path, f"{key}.values", required=True)
        try:
            p = np.asarray(p, dtype=float).reshape(len(p), -1)
            v = np.asarray(v, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise SpecError("expected numbers", path, key) from None
        if p.shape != (len(v), len(variables)):
            raise SpecError(f"expected {len(v)} points of {len(variables)} coordinates for "
                            f"{len(v)} values", path, key)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(v))):
            raise SpecError("has NaN or infinity", path, key)
        lo, hi = np.array(bounds).T
        if np.any(p < lo) or np.any(p > hi):
            raise SpecError("has points outside the domain", path, key)
        points.append(p)
        values.append(v)
    if len(noises) > 1:
        raise SpecError("all [[observations]] must share one noise sd", path, "observations")
    return np.concatenate(points), np.concatenate(values), noises.pop()


def _read_csv(file, variables, path, key):
    try:
        rows = list(csv.DictReader(open(file, newline="")))
    except OSError as err:
        raise SpecError(f"cannot read {file} ({err.strerror})", path, key) from None
    columns = list(variables) + ["value"]
    if not rows or any(c not in rows[0] for c in columns):
        raise SpecError(f"{file} needs the columns {', '.join(columns)}", path, key)
    try:
        return ([[float(r[v]) for v in variables] for r in rows],
                [float(r["value"]) for r in rows])
    except ValueError:
        raise SpecError(f"{file} has a value that is not a number", path, key) from None


def _periodic(pde, variables, path):
    """[pde] periodic = ["x", ...] -> axis indices."""
    names = _get(pde, "periodic", list, path, "pde.periodic", [])
    if any(n not in variables for n in names) or len(set(names)) != len(names):
        raise SpecError(f"expected distinct variable names from {list(variables)}", path,
                        "pde.periodic")
    return tuple(variables.index(n) for n in names)


def _conditions(pde, variables, periodic, names, expr, path):
    """[pde.boundary] (one table) or [[pde.boundary]] (several) -> boundary.Condition's.
    Without any, Dirichlet on every face of the non-periodic axes."""
    spec = pde.get("boundary", {})
    single = isinstance(spec, dict)
    tables = [spec] if single else spec
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SpecError("expected a table [pde.boundary] or tables [[pde.boundary]]", path,
                        "pde.boundary")
    out = []
    for i, table in enumerate(tables):
        key = "pde.boundary" if single else f"pde.boundary[{i}]"
        _check_keys(table, _BOUNDARY_KEYS, path, key)
        faces = _faces(table.get("faces", "all"), variables, periodic, path, f"{key}.faces")
        text = _get(table, "operator", (str,), path, f"{key}.operator", "u")
        operator = None
        if text.strip() != "u":
            operator = operators.parse(text, names, path, f"{key}.operator", allow_u=True,
                                       variables=variables)
            if not operator.derivatives(list(variables)):
                raise SpecError(f"operator {text!r} does not involve u", path,
                                f"{key}.operator")
        weight, noise = (_get(table, k, float, path, f"{key}.{k}") for k in ("weight", "noise"))
        for k, v in (("weight", weight), ("noise", noise)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise SpecError("expected a finite number > 0", path, f"{key}.{k}")
        if weight is not None and noise is not None:
            raise SpecError("give a weight (tempered) or a noise sd (noisy data), not both",
                            path, f"{key}.noise")
        if faces:
            out.append(Condition(faces, operator, expr(table, "value", f"{key}.value"), weight,
                                 noise, key=key))
    return tuple(out)


def _faces(spec, variables, periodic, path, key):
    if spec == "all":
        return tuple(Face(j, s) for j in range(len(variables)) if j not in periodic
                     for s in ("lo", "hi"))
    if not isinstance(spec, list):
        raise SpecError('expected "all" or a list like ["x_lo", "x_hi"]', path, key)
    out = []
    for item in spec:
        axis, _, side = str(item).partition("_")
        if axis not in variables or side not in ("lo", "hi"):
            raise SpecError(f"unknown face {item!r} (faces are <variable>_lo or <variable>_hi)",
                            path, key)
        if variables.index(axis) in periodic:
            raise SpecError(f"face {item!r} is on a periodic axis (it takes no condition)",
                            path, key)
        out.append(Face(variables.index(axis), side))
    return tuple(out)


def _points(table, key, d, path, required=False):
    full = f"grid.{key}"
    value = _get(table, key, list, path, full, required=required)
    if value is None:
        return None
    if len(value) != d or any(isinstance(n, bool) or not isinstance(n, int) for n in value):
        raise SpecError(f"expected {d} whole numbers, one per variable", path, full)
    if any(n < MIN_POINTS for n in value):
        raise SpecError(f"each axis needs at least {MIN_POINTS} points", path, full)
    return tuple(value)


def estimate_bytes(points: tuple) -> int:
    """Rough working set of a MAP step: a few grid tensors and per-axis matrices."""
    n = math.prod(points)
    return 8 * (40 * n + 12 * sum(p * p for p in points))


def _check_memory(points, path):
    need = estimate_bytes(points)
    if need > MAX_BYTES:
        raise SpecError(f"grid {list(points)} needs about {need / 2**30:.1f} GiB, more than "
                        f"the {MAX_BYTES / 2**30:.0f} GiB allowed", path, "grid.points")


def load_inference(path: str | Path | None = None, **overrides) -> "Recipe | SampleRecipe":
    """Read an inference recipe: a file, or a packaged recipe by name ("map" is the command
    line's default, "precise" map with each CG solve to its tolerance, "map-adam" the
    paper's Adam protocol, "nuts", "gaussian"), or, when path is None, the built-in
    defaults. Its ``method`` (or the ``method`` override) picks the class: a ``Recipe``
    for "map" (the default), a ``SampleRecipe`` for "nuts" and "gaussian"; keys a file
    leaves out take that class's defaults, and a key of the other class is an error."""
    path = None if path is None else recipe_file(path)
    data = {} if path is None else _recipe_data(path)
    method = overrides.get("method") or _get(data, "method", str, path, "method", "map")
    if method not in KINDS:
        raise SpecError(f"unknown method {method!r} (choose from {', '.join(KINDS)})", path,
                        "method")
    cls = KINDS[method]
    types = _types(cls)
    for key in data:
        if key not in types:
            kind = "map" if cls is SampleRecipe else "sampling (nuts, gaussian)"
            raise SpecError(f"is a key of {kind} recipes, not of {method} ones", path, key)
    values = {k: _get(data, k, t, path, k) for k, t in types.items() if k in data}
    values.update({k: v for k, v in overrides.items() if v is not None})
    recipe = cls(**{**values, "method": method}, source="" if path is None else str(path))
    _check_recipe(recipe, path)
    if cls is Recipe:  # TOML lists as tuples: a recipe is hashable and compares equal
        recipe = replace(recipe, rho_scales=tuple(float(v) for v in recipe.rho_scales),
                         families=tuple(recipe.families))
    return recipe


def _check_recipe(recipe, path) -> None:
    """Each field of a recipe in its range (a SpecError naming the key otherwise)."""
    for f in fields(recipe):
        key, v = f.name, getattr(recipe, f.name)
        if key in CHOICES and v not in CHOICES[key]:
            raise SpecError(f"unknown {key} {v!r} (choose from {', '.join(CHOICES[key])})",
                            path, key)
        if key == "rho_scales" and (not v or any(isinstance(x, bool) or not isinstance(
                x, (int, float)) or not x > 0 for x in v)):
            raise SpecError("expected a non-empty list of numbers > 0", path, key)
        bad = [x for x in v if x not in kernels.PLAIN] if key == "families" else []
        if bad:
            raise SpecError(f"unknown family {bad[0]!r} among the candidates (choose from "
                            f"{', '.join(kernels.PLAIN)})", path, key)
        if key in POSITIVE and not (math.isfinite(v) and v > 0):
            raise SpecError("expected a finite number > 0", path, key)
        if key in NON_NEGATIVE and not (math.isfinite(v) and v >= 0):
            raise SpecError("expected a finite number >= 0", path, key)
        if f.type is int and v < (0 if key in WHOLE else 1):
            raise SpecError(f"expected a whole number >= {0 if key in WHOLE else 1}", path, key)


def _recipe_data(path: Path, seen: tuple = ()) -> dict:
    """A recipe file's keys; ``extends = "other.toml"`` (beside it, or a packaged recipe by
    name) takes the other's keys first, this file's over them."""
    data = _read(path)
    _check_keys(data, set(_types(Recipe)) | set(_types(SampleRecipe)) | {"extends"}, path, "")
    if "extends" not in data:
        return data
    name = _get(data, "extends", str, path, "extends")
    base = recipe_file(name) if name in PACKAGED else path.parent / name
    if base.resolve() in seen + (path.resolve(),):
        raise SpecError(f"{name} extends itself (a cycle)", path, "extends")
    if not base.is_file():
        raise SpecError(f"no recipe {name} beside this file or packaged", path, "extends")
    return {**_recipe_data(base, seen + (path.resolve(),)),
            **{k: v for k, v in data.items() if k != "extends"}}


def map_recipe_of(recipe: SampleRecipe) -> Recipe:
    """The MAP recipe a sampling recipe starts from: its ``map`` file (beside it, else
    the packaged one of that name), with its ``map_jitter`` (for every start) and
    ``calibrate_tau_e``."""
    base = Path(recipe.source).parent if recipe.source else RECIPES
    path = base / recipe.map
    if not path.is_file() and Path(recipe.map).stem in PACKAGED:
        path = recipe_file(Path(recipe.map).stem)
    out = load_inference(path)
    if not isinstance(out, Recipe):
        raise SpecError(f"{recipe.map} is a {out.method} recipe, not a map one", recipe.source
                        or "recipe", "map")
    if recipe.map_jitter:
        out = replace(out, jitter=recipe.map_jitter, plain_jitter=recipe.map_jitter)
    return replace(out, calibrate_tau_e=True) if recipe.calibrate_tau_e else out

