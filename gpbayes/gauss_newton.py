"""The Gauss-Newton operator of minus the log joint at a ``Conditional`` (``GaussNewton``:
``mv``, ``diagonal``, ``preconditioner``, ``solve``, ``step``), in rotated eigen-whitened
coordinates s, U = (E_1 kron ... kron E_d) s; its bases and preconditioners.
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.linalg import solve_triangular

from gpbayes import kron
from gpbayes.coordinates import Coordinates
from gpbayes.infer import solvers


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RotatedBasis:
    """The coordinates s of the Gauss-Newton operator for one kernel: per axis E_j (U =
    (E_1 kron ... E_d) s), E_j^{-1}, K_j^{-1} E_j, and ``operators``: {(axis, order):
    B_j^m}, s along axis j -> d^m u / dx_j^m of the conditional mean, k_j^(m) K_j^{-1} E_j
    (m = 0: E_j - jitter K_j^{-1} E_j), one matrix per order the model uses."""

    e: list
    e_inv: list
    k_inv_e: list
    operators: dict


def rotated_basis(cond) -> RotatedBasis:
    """E_j = Q_j Lambda_j^{1/2} R_j from the eigendecomposition of K_j = L_j L_j^T (no
    gradient flows here).

    R_j is orthogonal (the prior of s stays N(0, I)) and block-diagonal over blocks of
    Lambda_j spanning DECADES orders of magnitude: within each it diagonalises the Gram of
    the axis's highest derivative operator (``decade_rotation``), whose eigenvectors there
    are near arbitrary (the kernel's eigenvalues cluster); rotated, the operator is
    near-diagonal too (benchmarks/journal.md: the preconditioner).
    """
    es, e_invs, k_inv_es = [], [], []
    for j, l in enumerate(cond.trils):
        lam, q = jnp.linalg.eigh(l @ l.T)
        lam = jnp.maximum(lam, lam[-1] * 1e-300)
        root = jnp.sqrt(lam)
        e, e_inv, k_inv_e = q * root, (q / root).T, q / root
        order = cond.problem.axis_order(j)
        if order:
            b = cond.kernel_matrix(j, order) @ k_inv_e
            rot = decade_rotation(lam, b.T @ b)
            e, e_inv, k_inv_e = e @ rot, rot.T @ e_inv, k_inv_e @ rot
        es.append(e), e_invs.append(e_inv), k_inv_es.append(k_inv_e)
    ops = {(j, m): (es[j] - cond.jitter * k_inv_es[j] if m == 0
                    else cond.kernel_matrix(j, m) @ k_inv_es[j])
           for j, m in cond.problem.kernel_orders}
    return RotatedBasis(es, e_invs, k_inv_es, ops)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Rotated(Coordinates):
    """s in a ``RotatedBasis``: every field is one mode product per axis (B_j^m)."""

    array: Array
    basis: RotatedBasis

    def derivative(self, cond, f: Array, j: int, m: int) -> Array:
        return kron.mode_dot(self.basis.operators[j, m], f, j)

    def weights(self, cond) -> Array:
        return kron.kron_apply(self.basis.k_inv_e, self.array)

    def grid(self, cond) -> Array:
        return kron.kron_apply(self.basis.e, self.array)

    def whitened(self, cond) -> Array:
        """z from s by the per-axis orthogonal L_j^{-1} E_j, without passing through U: the
        mean off a 3-D grid from z keeps the digits that K^{-1} U loses (``MapFit.z``)."""
        return kron.kron_apply([solve_triangular(l, e, lower=True)
                                for l, e in zip(cond.trils, self.basis.e)], self.array)


DECADES = 2.0  # orders of magnitude of the kernel's eigenvalues per block of the rotation


def decade_rotation(lam: Array, gram: Array) -> Array:
    """The orthogonal R, block-diagonal over blocks of DECADES decades of the ascending
    ``lam``, whose blocks are the eigenvectors of ``gram``'s diagonal blocks. Wider blocks
    diagonalize more of ``gram`` and less of diag(lam): the preconditioner's iterations
    have a minimum between.

    Traced, not a host callback (a compiled function with one is never written to the
    persistent compilation cache): one eigh of ``gram`` with its entries across blocks
    set to zero, whose eigenvectors then lie each within one block (the tridiagonal
    reduction keeps exact zeros), ordered by block."""
    decade = jnp.floor(jnp.log10(lam) / DECADES)
    same = decade[:, None] == decade[None, :]
    w, v = jnp.linalg.eigh(jnp.where(same, 0.5 * (gram + gram.T), 0.0))
    block = decade[jnp.argmax(jnp.abs(v), axis=0)]  # the block each column lies in
    order = jnp.lexsort((w, block))  # by block, then by eigenvalue
    v, block = v[:, order], block[order]
    return jnp.where(decade[:, None] == block[None, :], v, 0.0)


def equation_coefficients(cond, u: Array) -> dict:
    """{derivative name: c_o on the grid}, the linearisation of L[u] at u in each field."""
    return cond.coefficients(cond.fields(u))


def equation_diagonal(cond, basis: RotatedBasis, u: Array) -> Array:
    """The exact diagonal of I + J^T J in s for every term but the boundary rows (the
    prior, the equation, the observations). For J = sum_o diag(c_o) (kron_j B_j^o):
    diag(J^T J) = sum_{o,o'} (kron_j (B_j^o * B_j^o'))^T (c_o c_o')  (* elementwise)."""
    p = cond.problem
    coef = equation_coefficients(cond, u)
    ops = {name: [basis.operators[j, m] for j, m in enumerate(p.derivatives[name])]
           for name in coef}
    diag = jnp.ones(p.grid)
    for a in coef:
        for b in coef:
            mats = [(pa * pb).T for pa, pb in zip(ops[a], ops[b])]
            diag = diag + kron.kron_apply(mats, coef[a] * coef[b]) / cond.equation_sd**2
    if p.observations is not None:
        points, _, noise = p.observations
        sq = [(cond.cross(j, points[:, j]) @ basis.k_inv_e[j]) ** 2 for j in range(p.ndim)]
        diag = diag + jnp.sum(jax.vmap(lambda *rows: _outer(rows))(*sq), 0) / noise**2
    return diag


def _outer(vectors):
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] * v
    return out


class BoundaryRows:
    """The boundary rows of J in s, part by part (a condition on a face of axis a): a
    sum of terms c * (r . s along axis a, then B_c^m along each other axis c), with r a
    row (0 or -1) of B_a^m (``RotatedBasis.operators``) and c the term's coefficient
    on the face (``Conditional.face_coefficients``; a periodic part adds the opposite
    face's terms, negated). Dirichlet: one term, r a row of B_a^0, B^0 along the other
    axes, c = 1."""

    def __init__(self, cond, basis: RotatedBasis):
        p = cond.problem
        self.ndim = p.ndim
        self.parts = []
        for condition, face in p.boundary_parts:
            derivs = condition.derivatives(p.variables)
            shape = tuple(n for j, n in enumerate(p.grid) if j != face.axis)
            terms = []
            faces = [(face, 1.0)] + ([(face.opposite(), -1.0)] if condition.periodic else [])
            for f, sign in faces:
                coef = cond.face_coefficients(condition, f)
                for name, orders in derivs.items():
                    r = basis.operators[f.axis, orders[f.axis]][f.index]
                    mats = [basis.operators[j, m] for j, m in enumerate(orders)
                            if j != f.axis]
                    terms.append((r, mats, sign * coef[name].reshape(shape)))
            self.parts.append((face.axis, shape, terms))

    def apply(self, s: Array) -> Array:  # (..., grid) -> (..., n_b)
        lead = s.ndim - self.ndim
        out = []
        for a, _, terms in self.parts:
            t = sum(c * kron.kron_apply(mats, jnp.tensordot(s, r, axes=([lead + a], [0])))
                    for r, mats, c in terms)
            out.append(t.reshape(s.shape[:lead] + (-1,)))
        return jnp.concatenate(out, axis=-1)

    def transpose(self, y: Array) -> Array:  # (..., n_b) -> (..., grid)
        lead = y.ndim - 1
        out, start = 0.0, 0
        for a, shape, terms in self.parts:
            size = int(np.prod(shape))
            part = y[..., start:start + size].reshape(y.shape[:lead] + shape)
            start += size
            for r, mats, c in terms:
                t = kron.kron_apply([m.T for m in mats], c * part)
                out = out + jnp.expand_dims(t, lead + a) * jnp.expand_dims(
                    r, tuple(range(1, self.ndim - a)))
        return out

    def diagonal(self, scale: Array) -> Array:
        """The diagonal of B^T diag(scale^2) B (``scale`` per row)."""
        diag, start = 0.0, 0
        for a, shape, terms in self.parts:
            size = int(np.prod(shape))
            w = scale[start:start + size].reshape(shape) ** 2
            start += size
            for r1, m1, c1 in terms:
                for r2, m2, c2 in terms:
                    t = kron.kron_apply([(x * y).T for x, y in zip(m1, m2)], w * c1 * c2)
                    diag = diag + jnp.expand_dims(t, a) * jnp.expand_dims(
                        r1 * r2, tuple(range(1, self.ndim - a)))
        return diag


MAX_CAPACITANCE = 2000  # boundary rows taken exactly up to this many (n_b^2 doubles)


def exact_boundary_rows(problem) -> bool:
    """True where the preconditioner takes the boundary rows exactly (Woodbury, with an
    n_b x n_b capacitance formed and factored per operator): up to MAX_CAPACITANCE rows
    (2-D grids up to 500^2, 3-D up to about 18^3); beyond, by their diagonal. The
    capacitance's two triangular solves per CG iteration read n_b^2 doubles: on 32^3
    (6144 rows) 44 ms against 0.7 ms for the operator's product, and PCG with the
    diagonal alone needed 2.5x the iterations in 1/20 of the time (benchmarks/journal.md,
    "3-D without the capacitance")."""
    return sum(problem.part_sizes) <= MAX_CAPACITANCE


def boundary_gram(rows: BoundaryRows, diag: Array) -> Array:
    """B D^{-1} B^T (n_b x n_b): the boundary rows' Gram in the metric of the diagonal D of
    the other terms, block by block from the rows' Kronecker structure (``gram_2d`` on
    2-D grids: equal to ``gram_kron`` to rounding and a little faster; the 2-D results
    were measured with it, and rounding moves them where a CG solve ends near its
    budget: benchmarks/journal.md)."""
    return gram_2d(rows, 1.0 / diag) if rows.ndim == 2 else gram_kron(rows, 1.0 / diag)


def gram_kron(rows: BoundaryRows, w: Array) -> Array:
    """B diag(w) B^T from each term's (r, mats, c): a row of a part on axis a is
    c[p] r(x_a) prod_{j != a} M_j[p_j, x_j], so a block between two parts is, term by
    term, one contraction over the grid (``jnp.einsum``: O(n^(d+1)) a block in d
    dimensions, never an n_b x N matrix), scaled by c c'^T."""
    d = rows.ndim
    grid = [chr(ord("a") + j) for j in range(d)]
    left = [chr(ord("k") + j) for j in range(d)]
    right = [chr(ord("r") + j) for j in range(d)]

    def operands(axis, r, mats, out):
        others = [j for j in range(d) if j != axis]
        spec = [grid[axis]] + [out[j] + grid[j] for j in others]
        return spec, [r, *mats], "".join(out[j] for j in others)

    blocks = []
    for a, shape_a, terms in rows.parts:
        line = []
        for b, shape_b, other in rows.parts:
            block = 0.0
            for r, mats, c in terms:
                spec_a, ops_a, out_a = operands(a, r, mats, left)
                for r2, mats2, c2 in other:
                    spec_b, ops_b, out_b = operands(b, r2, mats2, right)
                    expr = ",".join(["".join(grid)] + spec_a + spec_b) + "->" + out_a + out_b
                    g = jnp.einsum(expr, w, *ops_a, *ops_b, optimize="optimal")
                    g = g.reshape(int(np.prod(shape_a)), int(np.prod(shape_b)))
                    block = block + c.reshape(-1)[:, None] * g * c2.reshape(-1)[None, :]
            line.append(block)
        blocks.append(jnp.concatenate(line, axis=1))
    out = jnp.concatenate(blocks, axis=0)
    return 0.5 * (out + out.T)


def gram_2d(rows: BoundaryRows, w: Array) -> Array:
    """B diag(w) B^T on a 2-D grid from each term's (r, [M], c): a row of a part on axis a
    at index k along the other axis is sum_t c_t[k] (r_t along a) (M_t[k] along the
    other), so a block between a part on axis a and one on axis b is, term by term,
    M diag(sum_a r r' w) M'^T (a = b) or M (w * r r'^T)^T M'^T (a != b, with r, r' placed
    on their axes), scaled by c c'^T."""
    blocks = []
    for a, _, terms in rows.parts:
        line = []
        for b, _, other in rows.parts:
            block = 0.0
            for r, (m,), c in terms:
                for r2, (m2,), c2 in other:
                    if a == b:
                        inner = jnp.tensordot(r * r2, w, axes=([0], [a]))
                        g = (m * inner) @ m2.T
                    else:
                        rw = w * (r[:, None] * r2[None, :] if a == 0 else r2[:, None] * r[None, :])
                        g = m @ (rw if a == 1 else rw.T) @ m2.T
                    block = block + c[:, None] * g * c2[None, :]
            line.append(block)
        blocks.append(jnp.concatenate(line, axis=1))
    out = jnp.concatenate(blocks, axis=0)
    return 0.5 * (out + out.T)


def woodbury_preconditioner(cond, basis: RotatedBasis, diag: Array) -> Callable[[Array], Array]:
    """v -> P^{-1} v for P = D + scale_b^2 B^T B (``exact_boundary_rows``): the diagonal
    D of the other terms plus the boundary rows B exactly, by the Woodbury identity with
    the capacitance C = I / scale_b^2 + B D^{-1} B^T (n_b x n_b, ``boundary_gram``, Cholesky)."""
    rows = BoundaryRows(cond, basis)
    c = boundary_gram(rows, diag) + jnp.diag(1.0 / cond.boundary_scale**2)
    c = c + 1e-12 * jnp.mean(jnp.diag(c)) * jnp.eye(len(c))  # corners repeat: near-singular
    chol = jnp.linalg.cholesky(c)

    def precond(v):
        y = v / diag
        t = rows.apply(y)
        s = jax.scipy.linalg.cho_solve((chol, True), jnp.moveaxis(t, -1, 0))
        return y - rows.transpose(jnp.moveaxis(s, 0, -1)) / diag

    return precond


def woodbury_root(cond, basis: RotatedBasis, diag: Array) -> Callable[[Array], Array]:
    """w -> F w with F F^T = P^{-1} (P as in ``woodbury_preconditioner``):
    F = D^{-1/2} (I + G M G^T), G = D^{-1/2} B^T S (S = diag(scale_b)), M = V diag(
    ((1 + g)^{-1/2} - 1) / g) V^T from G^T G = S B D^{-1} B^T S = V diag(g) V^T (a
    square root of (I + G G^T)^{-1}). A change of variables that leaves a Gaussian with
    precision P standard normal (NUTS on grids; no gradient flows here)."""
    rows = BoundaryRows(cond, basis)
    scale = cond.boundary_scale
    g, v = jnp.linalg.eigh(scale[:, None] * boundary_gram(rows, diag) * scale[None, :])
    root_g = jnp.sqrt(1.0 + jnp.maximum(g, 0.0))
    m = (v * (-1.0 / (root_g * (1.0 + root_g)))) @ v.T  # ((1 + g)^{-1/2} - 1) / g, stably
    root = 1.0 / jnp.sqrt(diag)

    def apply(w):
        t = scale * rows.apply(root * w)
        return root * (w + root * rows.transpose(scale * (t @ m)))

    return apply


class GaussNewton:
    """H = I + J^T J of minus the log joint in s, linearised at grid values u.

    ``s0`` (u in s), ``r0`` (the residual there), ``jvp``/``vjp`` (J and J^T), ``mv``
    (H, batched over leading axes), ``diagonal`` (exact), ``preconditioner`` (the
    diagonal, with the boundary rows exact by Woodbury up to MAX_CAPACITANCE rows),
    ``gradient`` (of minus the log joint at s0), ``solve`` and ``step``.
    """

    def __init__(self, cond, u: Array, basis: RotatedBasis | None = None):
        self.cond = cond
        self.ndim = cond.problem.ndim
        self.basis = basis = rotated_basis(cond) if basis is None else basis
        self.s0 = self.from_grid(u)
        self.r0 = cond.data_residual(self.to_grid(self.s0))
        # J from s directly: each field one mode product per axis (``RotatedBasis``)
        self.jvp = jax.linearize(lambda s: cond.data_residual(Rotated(s, basis)), self.s0)[1]
        self._transpose = jax.linear_transpose(self.jvp, self.s0)
        self.inner = inner = equation_diagonal(cond, basis, u)
        if not cond.problem.conditions:
            self.diagonal, self._precondition = inner, lambda v: v / inner
            return
        self.diagonal = inner + BoundaryRows(cond, basis).diagonal(cond.boundary_scale)
        self._precondition = (woodbury_preconditioner(cond, basis, inner)
                              if exact_boundary_rows(cond.problem)
                              else lambda v: v / self.diagonal)

    def to_grid(self, s: Array) -> Array:
        """U = (E_1 kron ... E_d) s (on the last d axes)."""
        return kron.kron_apply(self.basis.e, s)

    def from_grid(self, u: Array) -> Array:
        """s = (E_1 kron ... E_d)^{-1} U (on the last d axes)."""
        return kron.kron_apply(self.basis.e_inv, u)

    def vjp(self, v: Array) -> Array:
        return self._transpose(v)[0]

    def mv(self, v: Array) -> Array:
        """H v, batched over leading axes of v."""
        flat = v.reshape((-1,) + v.shape[v.ndim - self.ndim:])
        out = flat + jax.vmap(lambda x: self.vjp(self.jvp(x)))(flat)
        return out.reshape(v.shape)

    def preconditioner(self, v: Array) -> Array:
        """P^{-1} v (batched)."""
        return self._precondition(v)

    @property
    def gradient(self) -> Array:
        """The gradient of minus the log joint in s at s0: s0 + J^T r0."""
        return self.s0 + self.vjp(self.r0)

    def solve(self, b: Array, tol: float, maxiter: int) -> tuple:
        """H^{-1} b by PCG: (x, iterations, the largest recomputed relative residual)."""
        return solvers.pcg(self.mv, b, self.preconditioner, tol, maxiter, self.ndim)

    def step(self, tol: float, maxiter: int) -> tuple:
        """One Gauss-Newton step on U (exact for a linear PDE): (s, CG iterations,
        recomputed relative residual); U = ``to_grid(s)``."""
        ds, k, res = self.solve(-self.gradient, tol, maxiter)
        return self.s0 + ds, k, res

    def unknown_columns(self) -> tuple:
        """The unknowns' part of the Jacobian at s0: (sites, their values th0, J_theta of
        the data residual (rows, p), J_p of their prior residual (p, p), C = J_s^T J_theta
        (p, grid))."""
        cond = self.cond
        sites = list(cond.problem.unknown_sites.values())
        th0 = jnp.stack([cond.values[s] for s in sites])
        u0 = self.to_grid(self.s0)
        j_t = jax.jacfwd(lambda th: self.at(th).data_residual(u0))(th0)
        j_p = jax.jacfwd(lambda th: self.at(th).prior_residual)(th0)
        return sites, th0, j_t, j_p, jax.vmap(self.vjp, in_axes=1)(j_t)

    def at(self, th: Array):
        """The Conditional with the unknowns' sites at ``th`` (in unknown_sites order)."""
        return self.cond.with_values(dict(zip(self.cond.problem.unknown_sites.values(), th)))

    def eliminate_unknowns(self, tol: float, maxiter: int, rhs: Array | None = None,
                           columns: tuple | None = None) -> tuple:
        """The unknowns' Schur complement S = J_theta^T J_theta + J_p^T J_p - C^T H^{-1} C
        (their Laplace precision with U integrated out) and H^{-1} C (p, grid), solved by
        PCG in one batch with ``rhs`` (H^{-1} rhs returned, else None): (S, H^{-1} C,
        H^{-1} rhs, CG iterations). ``columns``: ``unknown_columns()``, if computed."""
        _, _, j_t, j_p, cols = columns or self.unknown_columns()
        b = cols if rhs is None else jnp.concatenate([rhs[None], cols])
        x, k, _ = self.solve(b, tol, maxiter)
        y, h_cols = (None, x) if rhs is None else (x[0], x[1:])
        axes = tuple(range(1, cols.ndim))
        schur = j_t.T @ j_t + j_p.T @ j_p - jnp.tensordot(cols, h_cols, axes=(axes, axes))
        return 0.5 * (schur + schur.T), h_cols, y, k

    def joint_step(self, tol: float, maxiter: int) -> tuple:
        """One Gauss-Newton step on U and the unknowns together, halved until the log
        joint does not fall: (s, {site: value}, CG iterations). The unknowns' few columns
        are eliminated by their Schur complement (``eliminate_unknowns``)."""
        columns = self.unknown_columns()
        sites, th0, j_t, j_p, cols = columns
        schur, h_cols, y, k = self.eliminate_unknowns(tol, maxiter, -self.gradient, columns)
        g_t = j_t.T @ self.r0 + j_p.T @ self.cond.prior_residual
        d_th = jnp.linalg.solve(schur, -(g_t + jnp.tensordot(cols, y, axes=y.ndim)))
        d_s = y - jnp.tensordot(d_th, h_cols, axes=1)

        def objective(t):
            return -self.at(th0 + t * d_th).log_joint(self.to_grid(self.s0 + t * d_s))

        t = solvers.backtrack(objective, objective(jnp.zeros(())))
        th = th0 + t * d_th
        return self.s0 + t * d_s, dict(zip(sites, th)), k
