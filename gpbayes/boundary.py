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

    def name(self, variables) -> str:
        return f"{variables[self.axis]}_{self.side}"

    @property
    def index(self) -> int:
        return 0 if self.side == "lo" else -1

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
    ``key``: the model-file key, for messages.
    """

    faces: tuple
    operator: Expression | None = None
    value: Expression | None = None
    weight: float | None = None
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


def periodic_conditions(axis: int, variables, orders: int, spacing: float) -> list:
    """The equality conditions of a periodic axis: u and its first ``orders`` - 1
    derivatives along the axis equal on its two faces. The k-th derivative's rows are
    scaled by spacing^k, which leaves the constraint as it is and its rows as large as
    u's: at the boundary precision's cap, unscaled u_x rows stalled CG (20000 iterations
    against 700 without them, advection-periodic at 80 x 50; benchmarks/README.md)."""
    from gpbayes.operators import parse

    v = variables[axis]
    out = []
    for k in range(orders):
        name = "u" if k == 0 else f"{float(spacing) ** k!r}*u_" + v * k
        op = parse(name, set(), allow_u=True, variables=variables)
        out.append(Condition((Face(axis, "lo"),), op, periodic=True, key="pde.periodic"))
    return out


def is_affine(fn, names, shape) -> bool:
    """True when fn({name: field}) is affine in the fields (checked on random fields)."""
    a, b = (dict(zip(names, jax.random.normal(k, (len(names),) + tuple(shape))))
            for k in jax.random.split(jax.random.PRNGKey(0)))
    mix = {n: 0.3 * a[n] + 0.7 * b[n] for n in names}
    lhs, rhs = fn(mix), 0.3 * fn(a) + 0.7 * fn(b)
    return bool(jnp.allclose(lhs, rhs, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(rhs)) + 1)))
