"""Problem: the PDE, its box domain and grid, its data (source, boundary values,
observations), the kernel settings, and the environment its expressions see.
"""

import copy
import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

from gpbayes.boundary import Condition, Face, derivative_scale, is_affine, periodic_conditions
from gpbayes.errors import SpecError
from gpbayes.operators import Expression

__all__ = ["Condition", "Face", "Problem"]

# Ghost points past a derivative face by default: the conditional mean's residual falls
# from its edge-cell level to the interior's over about 5-10 cells (poisson1d-robin), and
# an elliptic equation's ghost strip (a Cauchy problem) slows CG as it widens
# (poisson2d-mixed: 114 s at 4, 247 s at 6, 335 s at 8; benchmarks/journal.md).
AUTO_GHOST_CELLS = 6


@dataclass(eq=False)
class Problem:
    """A PDE on a box, discretised on a uniform grid that includes both ends of each axis.

    ``equation`` is L[u]; the residual is L[u] - source. ``solution`` (optional) gives the
    source (by automatic differentiation) and the boundary values when those are absent.
    ``conditions`` (``boundary.Condition``) are the boundary and initial conditions; the
    shorthand ``faces`` with ``boundary_value`` is one Dirichlet condition on those faces.
    ``periodic``: axis indices that are periodic (u and its derivatives along the axis
    below the equation's order equal on its two faces: ``periodic_conditions``).
    ``ghost_cells``: grid points added past each face whose condition takes a derivative
    across it, the equation held there too (its source continued past the face): the
    domain's edge cell becomes an interior one, whose residual no longer integrates into
    a slope of the error (benchmarks/journal.md). None (automatic): ``AUTO_GHOST_CELLS``
    where the source and the boundary values are finite on them, else none. ``grid`` is
    the extended grid, ``domain_grid`` the model file's.
    """

    name: str
    variables: tuple
    domain: tuple
    grid: tuple
    equation: Expression
    faces: tuple = ()
    test_grid: tuple = None
    solution: Expression = None
    source: Expression = None
    boundary_value: Expression = None
    constants: dict = field(default_factory=dict)
    family: str = "student-t-mixture"
    components: int = 30
    max_frequency: float = 20.0
    boundary_weight: float = 200.0
    ghost_cells: int = None  # ghost points past derivative faces (None: automatic)
    domain_grid: tuple = None  # set from ``grid``: the grid without the ghost points
    boundary_noise: float = None  # noise sd of the boundary data (replaces the tempered weight)
    equation_noise: float = None  # sd of the equation residual (fixes tau_e)
    observations: tuple = None  # (points (M, d), values (M,), noise sd): interior data
    unknowns: dict = field(default_factory=dict)  # name -> (prior, loc, scale)
    conditions: tuple = None  # boundary.Condition; None: Dirichlet on ``faces``
    periodic: tuple = ()  # periodic axis indices
    priors: dict = None  # hyperparameter priors for sampling them; see model.hyper_prior
    description: str = ""
    origin: str = None  # the file it came from, for messages

    def __post_init__(self):
        self.variables = tuple(self.variables)
        self.domain = tuple((float(lo), float(hi)) for lo, hi in self.domain)
        given = tuple(int(n) for n in self.grid)
        self.periodic = tuple(int(j) for j in self.periodic)
        if self.conditions is None:
            self.conditions = ((Condition(tuple(self.faces), None, self.boundary_value),)
                               if self.faces else ())
        self.conditions = tuple(c for c in self.conditions if not c.periodic) + tuple(
            c for j in self.periodic
            for c in periodic_conditions(j, self.variables, max(self.axis_order(j), 1)))
        cells = AUTO_GHOST_CELLS if self.ghost_cells is None else self.ghost_cells
        known = tuple(int(n) for n in self.domain_grid) if self.domain_grid else None
        # dataclasses.replace passes both grids: keep the domain's unless grid was changed
        self.domain_grid = (known if known and given in (known, self._extended(known, cells))
                            else given)
        self.test_grid = tuple(int(n) for n in (self.test_grid or self.domain_grid))
        self._extend(cells)
        defaults = {"log_w": (float(np.log(1.0 / self.components)), 2.0), "log_rho": (0.0, 2.0),
                    "mu": (0.0, max(self.max_frequency, 1.0) / 4), "log_tau": (0.0, 10.0)}
        self.priors = {**defaults, **(self.priors or {})}
        if self.source is None and self.solution is None:
            raise SpecError("give a source or an exact solution", self.origin, "pde.source")
        if self.source is None and set(self.unknowns) & set(self.equation.names):
            raise SpecError("the equation has unknowns: give the source explicitly", self.origin,
                            "pde.source")
        for c in self.conditions:
            if c.value is None and self.solution is None and not c.periodic:
                raise SpecError("give a boundary value or an exact solution", self.origin,
                                f"{c.key}.value")
            if (c.value is None and c.operator is not None and not c.periodic
                    and set(self.unknowns) & set(c.operator.names)):
                raise SpecError("the operator has unknowns: give the value explicitly",
                                self.origin, f"{c.key}.value")
            if c.operator is not None and not self._affine(c):
                raise SpecError(f"operator {c.operator.text!r} is not linear in u and its "
                                "derivatives (boundary operators must be)", self.origin,
                                f"{c.key}.operator")
        # Evaluate the data now (outside any trace), so NaN or inf is reported at once.
        with jax.ensure_compile_time_eval():
            if self.ghost_cells is None:  # automatic: ghost points where the data continue
                try:
                    self.source_values, self.boundary_values  # noqa: B018
                except SpecError:
                    self._extend(0)
            self.source_values, self.boundary_values, self.exact_test  # noqa: B018

    def with_kernel(self, family: str, components: int) -> "Problem":
        """The same problem (data shared, not recomputed) with another kernel family."""
        out = copy.copy(self)
        out.family, out.components = family, int(components)
        out.priors = {**self.priors, "log_w": (float(np.log(1.0 / components)), 2.0)}
        return out

    def _extend(self, cells: int) -> None:
        """Set the grid to the model file's extended by ``cells`` ghost points past each face
        whose condition takes a derivative across it (not periodic), and the faces' grid
        indices to match; forget whatever was computed on another grid."""
        for name in ("axes", "domain_axes", "source_values", "boundary_values", "row_weights",
                     "row_noise"):
            self.__dict__.pop(name, None)
        self.ghosts = self._ghosts(cells)
        self.grid = self._extended(self.domain_grid, cells)
        self.conditions = tuple(dataclasses.replace(c, faces=tuple(
            dataclasses.replace(f, ghost=self.ghosts[f.axis][f.side == "hi"]) for f in c.faces))
            for c in self.conditions)
        # one entry per boundary part (a condition on one face), in the order of the rows
        self.faces = tuple(f for c in self.conditions for f in c.faces)

    def _ghosts(self, cells: int) -> tuple:
        """(lo, hi) ghost points per axis: ``cells`` past each face whose condition takes a
        derivative across it (not periodic), none elsewhere."""
        out = [[0, 0] for _ in self.variables]
        for c in self.conditions:
            for f in c.faces:
                if c.crosses(f, self.variables):
                    out[f.axis][f.side == "hi"] = cells
        return tuple(tuple(x) for x in out)

    def _extended(self, grid: tuple, cells: int) -> tuple:
        return tuple(n + lo + hi for n, (lo, hi) in zip(grid, self._ghosts(cells)))

    @property
    def has_ghosts(self) -> bool:
        return any(map(any, self.ghosts))

    @cached_property
    def domain_axes(self) -> tuple:
        """The grid axes inside the domain (without the ghost points)."""
        return tuple(x[lo:len(x) - hi] for x, (lo, hi) in zip(self.axes, self.ghosts))

    @property
    def ndim(self) -> int:
        return len(self.variables)

    @property
    def size(self) -> int:
        return int(np.prod(self.grid))

    @cached_property
    def axes(self) -> tuple:
        out = []
        for (lo, hi), n, (a, b) in zip(self.domain, self.domain_grid, self.ghosts):
            x = _axis(lo, hi, n)
            h = x[1] - x[0] if n > 1 else 0.0
            out.append(np.concatenate([lo - h * np.arange(a, 0, -1), x,
                                       hi + h * np.arange(1, b + 1)]))
        return tuple(out)

    @cached_property
    def test_axes(self) -> tuple:
        return tuple(_axis(lo, hi, n) for (lo, hi), n in zip(self.domain, self.test_grid))

    @cached_property
    def derivatives(self) -> dict:
        """{name: orders per axis} of the u-derivatives the equation uses."""
        return self.equation.derivatives(list(self.variables))

    @cached_property
    def boundary_derivatives(self) -> dict:
        """{name: orders per axis} of the fields the non-Dirichlet conditions use."""
        return {n: o for c in self.conditions if not c.dirichlet
                for n, o in c.derivatives(self.variables).items()}

    @cached_property
    def kernel_orders(self) -> list[tuple[int, int]]:
        """(axis, derivative order) of every kernel matrix the model uses on the grid:
        the values' (order 0), the equation's and the conditions' derivatives."""
        orders = {(j, 0) for j in range(self.ndim)}
        for o in [*self.derivatives.values(), *self.boundary_derivatives.values()]:
            orders |= set(enumerate(o))
        return sorted(orders)

    def axis_order(self, j: int) -> int:
        """The highest derivative order along axis j in the equation (0 if none)."""
        return max([orders[j] for orders in self.derivatives.values()] + [0])

    def coordinates(self, axes=None) -> dict:
        """Axis arrays shaped to broadcast against a grid tensor, by variable name."""
        axes = self.axes if axes is None else axes
        out = {}
        for j, (name, x) in enumerate(zip(self.variables, axes)):
            shape = [1] * self.ndim
            shape[j] = -1
            out[name] = jnp.asarray(x).reshape(shape)
        return out

    @property
    def unknown_sites(self) -> dict:
        """{unknown name: numpyro site name}; lognormal unknowns are sampled as log_<name>."""
        return {n: (n if prior == "normal" else f"log_{n}")
                for n, (prior, _, _) in self.unknowns.items()}

    def environment(self, coordinates: dict, extra: dict | None = None) -> dict:
        """The names an expression may use: the constants, the coordinates (by axis name)
        and ``extra`` (the unknowns' values and u's fields, for the equation). The one
        place where an expression's environment is assembled."""
        return {**self.constants, **coordinates, **(extra or {})}

    def _field(self, expr, axes):
        env = self.environment(self.coordinates(axes))
        shape = tuple(len(x) for x in axes)
        with np.errstate(all="ignore"):
            return jnp.broadcast_to(jnp.asarray(expr(env), dtype=jnp.float64), shape)

    @cached_property
    def source_values(self) -> np.ndarray:
        """f on the grid: given, or the equation applied to the exact solution."""
        values = self.source_on(self.axes)
        key = "pde.source" if self.source is not None else "pde.solution"
        return _finite(np.asarray(values), self.origin, key, self.has_ghosts)

    @cached_property
    def midpoints(self) -> tuple:
        """Per axis, the cell midpoints of the domain's grid axis (numpy: concrete, so the
        kernel's cross matrices there take the lag path, ``kernels.cross``)."""
        return tuple(0.5 * (x[1:] + x[:-1]) for x in map(np.asarray, self.domain_axes))

    @cached_property
    def midpoint_source(self) -> np.ndarray:
        """f at the cell midpoints, where the check reads the PDE residual every sweep
        (shared with ``with_kernel``'s variants, like ``source_values``)."""
        return self.source_on(self.midpoints)

    def source_on(self, axes) -> np.ndarray:
        """f on the grid spanned by ``axes`` (any points)."""
        if self.source is not None:
            return np.asarray(self._field(self.source, axes))
        return np.asarray(self.equation_of_solution(axes))

    def equation_of_solution(self, axes) -> jax.Array:
        """L[solution] on the grid spanned by ``axes`` (automatic differentiation)."""
        return self.apply_to_solution(self.equation, axes)

    def apply_to_solution(self, expr: Expression, axes) -> jax.Array:
        """An expression in u and its derivatives applied to the exact solution on the grid
        spanned by ``axes`` (automatic differentiation)."""
        fields = {}
        mesh = jnp.meshgrid(*[jnp.asarray(x) for x in axes], indexing="ij")
        points = jnp.stack([m.reshape(-1) for m in mesh], axis=-1)
        shape = mesh[0].shape
        for name, orders in expr.derivatives(list(self.variables)).items():
            fn = self._pointwise_solution()
            for j, k in enumerate(orders):
                for _ in range(k):
                    fn = _partial(fn, j)
            fields[name] = jax.vmap(fn)(points).reshape(shape)
        env = self.environment(self.coordinates(axes), fields)
        return jnp.broadcast_to(expr(env), shape)

    def _pointwise_solution(self):
        def u(p):
            env = self.environment({v: p[j] for j, v in enumerate(self.variables)})
            return jnp.asarray(self.solution(env), dtype=jnp.float64)

        return u

    def face_operator(self, condition, face, fields: dict, unknowns: dict) -> jax.Array:
        """A condition's operator on one face, flattened, from its fields there (shaped as
        the face with its axis kept, ``Face.slab``) and the unknowns' values."""
        axes = face.axes(self.axes)
        env = self.environment(self.coordinates(axes), {**unknowns, **fields})
        return jnp.broadcast_to(condition.operator(env), tuple(len(x) for x in axes)).reshape(-1)

    def _affine(self, condition) -> bool:
        face = condition.faces[0]
        shape = tuple(len(x) for x in face.axes(self.axes))
        unknowns = dict.fromkeys(self.unknowns, 1.0)
        return is_affine(lambda f: self.face_operator(condition, face, f, unknowns),
                         list(condition.derivatives(self.variables)), shape)

    @property
    def boundary_parts(self) -> list:
        """[(condition, face)]: the boundary terms face by face, in the order of the rows."""
        return [(c, f) for c in self.conditions for f in c.faces]

    @property
    def part_sizes(self) -> list:
        """The number of rows (grid points on the face) of each boundary part."""
        return [self.size // self.grid[f.axis] for _, f in self.boundary_parts]

    @cached_property
    def row_weights(self) -> np.ndarray:
        """The tempered weight of each boundary row: its condition's, or boundary_weight
        times ``derivative_scale`` (a derivative condition's rows kept as large as u's)."""
        h = [x[1] - x[0] if len(x) > 1 else 1.0 for x in self.axes]
        w = [self.boundary_weight * derivative_scale(c, self.variables, h) if c.weight is None
             else c.weight for c, _ in self.boundary_parts]
        return np.repeat(np.asarray(w, dtype=float), self.part_sizes)

    @cached_property
    def row_noise(self) -> np.ndarray:
        """The noise sd of each boundary row: its condition's ``noise``, else
        ``boundary_noise``; NaN where the row is tempered instead (weight x tau_b)."""
        g = np.nan if self.boundary_noise is None else self.boundary_noise
        noise = [g if c.noise is None else c.noise for c, _ in self.boundary_parts]
        return np.repeat(np.asarray(noise, dtype=float), self.part_sizes)

    @property
    def tempered_rows(self) -> np.ndarray:
        """Which boundary rows are tempered (weight x tau_b) rather than noisy."""
        return np.isnan(self.row_noise)

    def boundary_arrays(self) -> list:
        """[(condition, face, its values shaped as the face)] for every boundary part."""
        parts = np.split(np.asarray(self.boundary_values), np.cumsum(self.part_sizes)[:-1])
        return [(c, f, v.reshape([n for k, n in enumerate(self.grid) if k != f.axis]))
                for (c, f), v in zip(self.boundary_parts, parts)]

    @cached_property
    def boundary_values(self) -> np.ndarray:
        """The conditions' values on their faces, concatenated in part order (corners
        repeat; 0 for periodic equalities)."""
        if not self.conditions:
            return np.zeros(0)
        out = []
        for c, f in self.boundary_parts:
            axes = f.axes(self.axes)
            if c.periodic:
                v = np.zeros(self.size // self.grid[f.axis])
            elif c.value is not None:
                v = self._field(c.value, axes)
            elif c.operator is None:
                v = self._field(self.solution, axes)
            else:
                v = self.apply_to_solution(c.operator, axes)
            key = f"{c.key}.value" if c.value is not None else "pde.solution"
            out.append(_finite(np.asarray(v).reshape(-1), self.origin, key, self.has_ghosts))
        return np.concatenate(out)

    @cached_property
    def exact_test(self) -> np.ndarray | None:
        """The exact solution on the test grid, or None."""
        if self.solution is None:
            return None
        return _finite(np.asarray(self._field(self.solution, self.test_axes)), self.origin,
                       "pde.solution")

    def exact(self, axes) -> np.ndarray | None:
        return None if self.solution is None else np.asarray(self._field(self.solution, axes))


def _axis(lo, hi, n):
    # The same points as linspace(0, 1, n) * (hi - lo) + lo; on [0, hi] exactly the reference's.
    return np.linspace(0.0, 1.0, n) * (hi - lo) + lo


def _partial(fn, j):
    return lambda p: jax.grad(fn)(p)[j]


def _finite(values, origin, key, ghosts=False):
    if not np.all(np.isfinite(values)):
        where = "on the grid (with its ghost points, grid.ghost_cells)" if ghosts else "on the grid"
        raise SpecError(f"evaluates to NaN or infinity {where}", origin, key)
    return values
