"""Boundary and initial conditions: faces of the box and the conditions on them, each an
operator on u applied on whole faces (Dirichlet ``u``, Neumann ``u_x``, Robin
``u + 0.5*u_x``, initial velocity ``u_t``), or equality of an operator between the two
faces of a periodic axis. Each is a Gaussian term of the model (``Conditional``).
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gpbayes.operators import Expression


@dataclass(frozen=True)
class Face:
    """One face of the box: axis index and side ('lo' or 'hi')."""

    axis: int
    side: str
    ghost: int = 0  # grid points beyond the face (``Problem.ghosts``)

    def name(self, variables) -> str:
        return f"{variables[self.axis]}_{self.side}"

    @property
    def index(self) -> int:
        return self.ghost if self.side == "lo" else -1 - self.ghost

    def opposite(self) -> "Face":
        return Face(self.axis, "hi" if self.side == "lo" else "lo")

    def take(self, u: jax.Array) -> jax.Array:
        """The values of a grid tensor on this face, flattened."""
        return jnp.take(u, self.index, axis=self.axis).reshape(-1)

    def slab(self, u: jax.Array) -> jax.Array:
        """The values of a grid tensor on this face, the face's axis kept (length 1)."""
        return jnp.take(u, jnp.array([self.index]), axis=self.axis)

    def axes(self, axes: tuple) -> tuple:
        """The grid axes with this face's axis reduced to its one point."""
        return tuple(np.asarray(x)[[self.index]] if j == self.axis else x
                     for j, x in enumerate(axes))


@dataclass(frozen=True)
class Condition:
    """operator[u] = value on each of ``faces`` (``operator`` None: u itself, Dirichlet).

    ``periodic``: operator[u] on each listed (lo) face equals it on the opposite face (the
    value is 0). ``value`` None takes the operator applied to the exact solution.
    ``weight``: this term's tempered weight (None: the model file's boundary_weight).
    ``noise``: this term's noise sd instead (the value is a noisy observation).
    ``key``: the model-file key, for messages.
    """

    faces: tuple
    operator: Expression | None = None
    value: Expression | None = None
    weight: float | None = None
    noise: float | None = None
    periodic: bool = False
    key: str = "pde.boundary"

    @property
    def dirichlet(self) -> bool:
        return self.operator is None and not self.periodic

    def derivatives(self, variables) -> dict:
        """{name: orders} of the u-derivatives the operator uses."""
        if self.operator is None:
            return {"u": (0,) * len(variables)}
        return self.operator.derivatives(list(variables))

    def orders(self, variables) -> np.ndarray:
        """The operator's highest derivative order along each axis."""
        return np.max(np.array(list(self.derivatives(variables).values())), axis=0)

    def crosses(self, face: Face, variables) -> bool:
        """True when this (non-periodic) condition takes a derivative across ``face``."""
        return not self.periodic and bool(self.orders(variables)[face.axis])


def periodic_conditions(axis: int, variables, orders: int) -> list:
    """The equality conditions of a periodic axis: u and its first ``orders`` - 1
    derivatives along the axis equal on its two faces."""
    from gpbayes.operators import parse

    v = variables[axis]
    return [Condition((Face(axis, "lo"),), parse("u" if k == 0 else "u_" + v * k, set(),
                                                 allow_u=True, variables=variables),
                      periodic=True, key="pde.periodic") for k in range(orders)]


def derivative_scale(condition: Condition, variables, spacing) -> float:
    """The default weight factor of a condition: the product over axes of spacing^(2k), k
    its operator's highest derivative order along the axis (1 for Dirichlet). A derivative
    row weighted so is as large as a row of u (h u_x ~ the difference of u over a cell),
    the constraint unchanged: unscaled, at the boundary precision's cap, derivative rows
    stalled CG (advection-periodic at 80 x 50: 20000 iterations against 700;
    poisson2d-mixed at 100^2: 8301 against 467; benchmarks/journal.md)."""
    return float(np.prod(np.asarray(spacing, dtype=float) ** (2 * condition.orders(variables))))


def is_affine(fn, names, shape) -> bool:
    """True when fn({name: field}) is affine in the fields (checked on random fields)."""
    a, b = (dict(zip(names, jax.random.normal(k, (len(names),) + tuple(shape))))
            for k in jax.random.split(jax.random.PRNGKey(0)))
    mix = {n: 0.3 * a[n] + 0.7 * b[n] for n in names}
    lhs, rhs = fn(mix), 0.3 * fn(a) + 0.7 * fn(b)
    return bool(jnp.allclose(lhs, rhs, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(rhs)) + 1)))
