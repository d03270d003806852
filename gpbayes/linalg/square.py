"""The square collocation system of a Conditional: the equation at the free grid points
(those on no Dirichlet face), the Dirichlet data at the rest, for U. It is the limit of
the MAP as the precisions grow, with the equation off the Dirichlet faces: a screen of
kernels and a start for the MAP in seconds, not the MAP.

The equation, linearised at U (Newton steps where it is nonlinear), is
sum_f c_f(x) (kron_j D_j^(m_fj)) U with D_j^(m) = k_j^(m) K_j^{-1} and D_j^(0) = I: U's
values themselves (the mean's, k_j K_j^{-1} U, damp the modes below the jitter to
nothing, which leaves this system near singular: 40x less accurate on
poisson2d-sin6cos20). Its separable part (each field's mean coefficient; fields whose
derivatives span one axis at most) is a ``KronSum`` solved directly; GMRES preconditioned
by it solves the rest (variable coefficients, mixed derivatives, the values' jitter).
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sl
from scipy.sparse.linalg import LinearOperator, gmres

from gpbayes.conditional import coefficients, operator, unknown_values
from gpbayes.linalg.kronsum import KronSum, KronSumSolver, SolveStats, mode_dot

TOLERANCE = 1e-10  # GMRES: relative residual of each linear solve
FLOOR = 1e-13  # GMRES and Newton stop at this x |f| (the rounding floor of the residual)
RESTART, MAX_ITERATIONS = 50, 400  # GMRES: Krylov vectors kept, matrix-vector products in all
NEWTON_STEPS = 12  # Newton steps at most where the equation is nonlinear in u


def fixed_faces(problem) -> tuple | None:
    """Per axis (lo, hi): whether a Dirichlet condition holds on that face; None when a
    condition of another kind (Neumann, Robin, periodic) or ghost points make the system
    not square in this sense."""
    if problem.has_ghosts or not problem.conditions:
        return None
    if any(not c.dirichlet for c in problem.conditions):
        return None
    fixed = [[False, False] for _ in problem.variables]
    for _, face in problem.boundary_parts:
        fixed[face.axis][face.side == "hi"] = True
    return tuple(tuple(f) for f in fixed)


def applies(problem) -> bool:
    """True when the square system is defined: Dirichlet conditions only, no unknowns."""
    return fixed_faces(problem) is not None and not problem.unknowns


@dataclass
class SquareSolution:
    """U on the grid and the stats of each linear solve (one per Newton step)."""

    u: np.ndarray
    stats: list

    @property
    def iterations(self) -> int:
        return sum(s.iterations for s in self.stats)

    @property
    def converged(self) -> bool:
        return bool(self.stats) and self.stats[-1].converged


class SquareSystem:
    """The square collocation system of ``cond`` (a ``Conditional``; see the module doc)."""

    def __init__(self, cond):
        p = cond.problem
        self.cond = cond
        self.problem = p
        fixed = fixed_faces(p)
        if fixed is None:
            raise ValueError("the square system needs Dirichlet conditions only")
        self.free = tuple(np.arange(int(lo), n - int(hi)) for n, (lo, hi) in zip(p.grid, fixed))
        self.d = [{m: self._derivative_matrix(j, m)
                   for m in sorted({o[j] for o in p.derivatives.values()} | {0})}
                  for j in range(p.ndim)]
        self.known = self._known_values()
        # the equation alone, at the unknowns of the site values v: no kernel factors
        self.coefficients_fn = jax.jit(
            lambda v, fields: coefficients(p, unknown_values(p, v), fields))
        self.operator_fn = jax.jit(lambda v, fields: operator(p, unknown_values(p, v), fields))

    def _derivative_matrix(self, j: int, m: int) -> np.ndarray:
        """D_j^(m) = k_j^(m) K_j^{-1} (K_j with the jitter); D_j^(0) = I."""
        c = self.cond
        if m == 0:
            return np.eye(self.problem.grid[j])
        k = np.asarray(c.kernel_matrix(j))
        factor = sl.cho_factor(k + c.jitter * np.eye(len(k)), lower=True)
        km = np.asarray(c.kernel_matrix(j, m))
        return sl.cho_solve(factor, km.T).T

    def fields(self, u: np.ndarray) -> dict:
        """The equation's fields of U, {name: (kron_j D_j^(m_j)) U}."""
        out = {}
        for name, orders in self.problem.derivatives.items():
            f = u
            for j, m in enumerate(orders):
                f = f if m == 0 else mode_dot(self.d[j][m], f, j)
            out[name] = jnp.asarray(f)
        return out

    def residual(self, u: np.ndarray) -> np.ndarray:
        """L[u] - f on the whole grid, from ``fields``."""
        f = self.operator_fn(self.cond.values, self.fields(u))
        return np.asarray(f) - np.asarray(self.problem.source_values)

    def _known_values(self) -> np.ndarray:
        """U with the Dirichlet data on the fixed faces, zero elsewhere."""
        p = self.problem
        u = np.zeros(p.grid)
        values, start = np.asarray(p.boundary_values), 0
        for (_, face), size in zip(p.boundary_parts, p.part_sizes):
            shape = tuple(n for j, n in enumerate(p.grid) if j != face.axis)
            index = [slice(None)] * p.ndim
            index[face.axis] = face.index
            u[tuple(index)] = values[start:start + size].reshape(shape)
            start += size
        return u

    def _take(self, u: np.ndarray) -> np.ndarray:
        return u[np.ix_(*self.free)]

    def _put(self, x: np.ndarray) -> np.ndarray:
        u = self.known.copy()
        u[np.ix_(*self.free)] = x
        return u

    def _linearised(self, u: np.ndarray) -> tuple:
        """(matvec on the free points, the separable part's solver) at U."""
        p = self.problem
        coef = {n: np.asarray(c)
                for n, c in self.coefficients_fn(self.cond.values, self.fields(u)).items()}
        free_d = [{m: d[np.ix_(f, f)] for m, d in dj.items()} for dj, f in zip(self.d, self.free)]
        shape = tuple(len(f) for f in self.free)

        def matvec(x):
            x = x.reshape(shape)
            full = np.zeros(p.grid)
            full[np.ix_(*self.free)] = x
            out = 0.0
            for name, orders in p.derivatives.items():
                f = full
                for j, m in enumerate(orders):
                    f = f if m == 0 else mode_dot(self.d[j][m], f, j)
                out = out + coef[name] * f
            return self._take(np.broadcast_to(out, p.grid)).reshape(-1)

        mats = [np.zeros((len(f), len(f))) for f in self.free]
        shift = 0.0
        for name, orders in p.derivatives.items():
            axes = [j for j, m in enumerate(orders) if m]
            c = float(np.mean(coef[name]))
            if not axes:
                shift += c
            elif len(axes) == 1:
                j = axes[0]
                mats[j] = mats[j] + c * free_d[j][orders[j]]
        return matvec, KronSumSolver(KronSum(tuple(mats), shift)), shape

    def solve(self, u0: np.ndarray | None = None, tol: float = TOLERANCE) -> SquareSolution:
        """U solving the square system: Newton steps from ``u0`` (default: the data on the
        fixed faces, zero inside), each a GMRES solve preconditioned by the separable
        part; one step where the equation is linear."""
        linear = self.cond.is_linear()
        u = self.known.copy() if u0 is None else self._put(self._take(np.asarray(u0)))
        stats, previous = [], np.inf
        floor = FLOOR * np.linalg.norm(self._take(np.asarray(self.problem.source_values)))
        for _ in range(1 if linear else NEWTON_STEPS):
            r = self._take(self.residual(u))
            size = np.linalg.norm(r)
            if not np.isfinite(size) or size >= previous:
                break
            previous = size
            matvec, separable, shape = self._linearised(u)
            x, s = krylov_solve(matvec, -r.reshape(-1), separable, shape, tol, floor)
            stats.append(s)
            u = self._put(self._take(u) + x.reshape(shape))
            if size <= floor or np.linalg.norm(x) <= 1e-10 * np.linalg.norm(self._take(u)):
                break
        return SquareSolution(u, stats)


def krylov_solve(matvec, b: np.ndarray, separable: KronSumSolver, shape: tuple,
                 tol: float, floor: float = 0.0) -> tuple:
    """A x = b by GMRES preconditioned by the separable part's direct solve, to a
    residual of ``tol`` |b| or ``floor``: (x, stats)."""
    n = b.size
    if not np.any(b):
        return np.zeros(n), SolveStats("direct", 0, 0.0, True)
    count = [0]

    def counted(x):
        count[0] += 1
        return matvec(x)

    op = LinearOperator((n, n), matvec=counted, dtype=float)
    pre = LinearOperator((n, n), matvec=lambda v: separable.solve(v.reshape(shape)).reshape(-1),
                         dtype=float)
    x0 = pre.matvec(b)  # the separable solve: exact where the operator is separable
    x, info = gmres(op, b, x0=x0, M=pre, rtol=tol, atol=floor, restart=RESTART,
                    maxiter=max(1, MAX_ITERATIONS // RESTART))
    residual = float(np.linalg.norm(b - matvec(x)) / np.linalg.norm(b))
    return x, SolveStats("gmres+fast diagonalization", count[0], residual, info == 0)
