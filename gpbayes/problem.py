"""Problem: the PDE, its box domain and grid, its data (source, boundary values,
observations), the kernel settings, and the environment its expressions see.
"""

import copy
from dataclasses import dataclass, field
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

from gpbayes.errors import SpecError
from gpbayes.operators import Expression


@dataclass(frozen=True)
class Face:
    """One face of the box: axis index and side ('lo' or 'hi')."""

    axis: int
    side: str

    def name(self, variables) -> str:
        return f"{variables[self.axis]}_{self.side}"

    def take(self, u: jax.Array) -> jax.Array:
        """The values of a grid tensor on this face, flattened."""
        index = 0 if self.side == "lo" else -1
        return jnp.take(u, index, axis=self.axis).reshape(-1)


@dataclass(eq=False)
class Problem:
    """A PDE on a box, discretised on a uniform grid that includes both ends of each axis.

    ``equation`` is L[u]; the residual is L[u] - source. ``solution`` (optional) gives the
    source (by automatic differentiation) and the boundary values when those are absent.
    """

    name: str
    variables: tuple
    domain: tuple
    grid: tuple
    equation: Expression
    faces: tuple
    test_grid: tuple = None
    solution: Expression = None
    source: Expression = None
    boundary_value: Expression = None
    constants: dict = field(default_factory=dict)
    family: str = "student-t-mixture"
    components: int = 30
    max_frequency: float = 20.0
    boundary_weight: float = 200.0
    boundary_noise: float = None  # noise sd of the boundary data (replaces the tempered weight)
    equation_noise: float = None  # sd of the equation residual (fixes tau_e)
    observations: tuple = None  # (points (M, d), values (M,), noise sd): interior data
    unknowns: dict = field(default_factory=dict)  # name -> (prior, loc, scale)
    priors: dict = None  # hyperparameter priors for sampling them; see model.hyper_prior
    description: str = ""
    origin: str = None  # the file it came from, for messages

    def __post_init__(self):
        self.variables = tuple(self.variables)
        self.domain = tuple((float(lo), float(hi)) for lo, hi in self.domain)
        self.grid = tuple(int(n) for n in self.grid)
        self.test_grid = tuple(int(n) for n in (self.test_grid or self.grid))
        self.faces = tuple(self.faces)
        defaults = {"log_w": (float(np.log(1.0 / self.components)), 2.0), "log_rho": (0.0, 2.0),
                    "mu": (0.0, max(self.max_frequency, 1.0) / 4), "log_tau": (0.0, 10.0)}
        self.priors = {**defaults, **(self.priors or {})}
        if self.source is None and self.solution is None:
            raise SpecError("give a source or an exact solution", self.origin, "pde.source")
        if self.source is None and set(self.unknowns) & set(self.equation.names):
            raise SpecError("the equation has unknowns: give the source explicitly", self.origin,
                            "pde.source")
        if self.boundary_value is None and self.solution is None and self.faces:
            raise SpecError("give a boundary value or an exact solution", self.origin,
                            "pde.boundary.value")
        # Evaluate the data now (outside any trace), so NaN or inf is reported at once.
        with jax.ensure_compile_time_eval():
            self.source_values, self.boundary_values, self.exact_test  # noqa: B018

    def with_kernel(self, family: str, components: int) -> "Problem":
        """The same problem (data shared, not recomputed) with another kernel family."""
        out = copy.copy(self)
        out.family, out.components = family, int(components)
        out.priors = {**self.priors, "log_w": (float(np.log(1.0 / components)), 2.0)}
        return out

    @property
    def ndim(self) -> int:
        return len(self.variables)

    @property
    def size(self) -> int:
        return int(np.prod(self.grid))

    @cached_property
    def axes(self) -> tuple:
        return tuple(_axis(lo, hi, n) for (lo, hi), n in zip(self.domain, self.grid))

    @cached_property
    def test_axes(self) -> tuple:
        return tuple(_axis(lo, hi, n) for (lo, hi), n in zip(self.domain, self.test_grid))

    @cached_property
    def derivatives(self) -> dict:
        """{name: orders per axis} of the u-derivatives the equation uses."""
        return self.equation.derivatives(list(self.variables))

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
        return _finite(np.asarray(values), self.origin, key)

    def source_on(self, axes) -> np.ndarray:
        """f on the grid spanned by ``axes`` (any points)."""
        if self.source is not None:
            return np.asarray(self._field(self.source, axes))
        return np.asarray(self.equation_of_solution(axes))

    def equation_of_solution(self, axes) -> jax.Array:
        """L[solution] on the grid spanned by ``axes`` (automatic differentiation)."""
        fields = {}
        mesh = jnp.meshgrid(*[jnp.asarray(x) for x in axes], indexing="ij")
        points = jnp.stack([m.reshape(-1) for m in mesh], axis=-1)
        shape = mesh[0].shape
        for name, orders in self.derivatives.items():
            fn = self._pointwise_solution()
            for j, k in enumerate(orders):
                for _ in range(k):
                    fn = _partial(fn, j)
            fields[name] = jax.vmap(fn)(points).reshape(shape)
        return jnp.broadcast_to(self.equation(self.environment(self.coordinates(axes), fields)),
                                shape)

    def _pointwise_solution(self):
        def u(p):
            env = self.environment({v: p[j] for j, v in enumerate(self.variables)})
            return jnp.asarray(self.solution(env), dtype=jnp.float64)

        return u

    def boundary_arrays(self) -> list:
        """[(face, g on that face shaped as the face)] for the listed faces."""
        sizes = [self.size // self.grid[f.axis] for f in self.faces]
        parts = np.split(np.asarray(self.boundary_values), np.cumsum(sizes)[:-1])
        return [(f, v.reshape([n for k, n in enumerate(self.grid) if k != f.axis]))
                for f, v in zip(self.faces, parts)]

    @cached_property
    def boundary_values(self) -> np.ndarray:
        """g on the listed faces, concatenated in face order (corners repeat)."""
        if not self.faces:
            return np.zeros(0)
        expr = self.boundary_value if self.boundary_value is not None else self.solution
        full = self._field(expr, self.axes)
        values = jnp.concatenate([f.take(full) for f in self.faces])
        key = "pde.boundary.value" if self.boundary_value is not None else "pde.solution"
        return _finite(np.asarray(values), self.origin, key)

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


def _finite(values, origin, key):
    if not np.all(np.isfinite(values)):
        raise SpecError("evaluates to NaN or infinity on the grid", origin, key)
    return values
