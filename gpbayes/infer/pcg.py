"""Matrix-free Gauss-Newton systems on the grid, solved by preconditioned CG.

At fixed hyperparameters minus the log joint is |z|^2/2 + |r(E z)|^2/2 in whitened grid
coordinates z, with r the model's data residual (``model.data_residual``). Here the
whitening is per-axis eigen: U = (E_1 kron ... kron E_d) z, E_j = Q_j Lambda_j^{1/2} R_j from
K_j = Q_j Lambda_j Q_j^T, rotated within each decade of Lambda_j (``axis_bases``). The
Gauss-Newton matrix H = I + J^T J (J the Jacobian of z -> r(E z)) is applied by one jvp
and one vjp, never formed. In that basis the PDE's stationary operators are nearly
diagonal, so CG is preconditioned by the exact diagonal of H, which Kronecker algebra
gives cheaply: for J = sum_o diag(c_o) (kron_j B_j^o),

    diag(J^T J) = sum_{o,o'} (kron_j (B_j^o * B_j^o'))^T (c_o c_o')   (* elementwise).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gpbayes import kernels, kron
from gpbayes.model import (
    axis_params,
    boundary_scale,
    data_residual,
    derivative_fields,
    derivative_matrix,
    equation_sd,
    unknown_values,
)


def axis_bases(problem, values, trils):
    """Per axis (E_j, E_j^{-1}, K_j^{-1} E_j) with E_j = Q_j Lambda_j^{1/2} R_j from the
    eigendecomposition K_j = L_j L_j^T = Q_j Lambda_j Q_j^T (no gradient flows here).

    R_j is orthogonal (the prior of z stays N(0, I)) and block-diagonal over the decades
    of Lambda_j: within each decade it diagonalises the Gram of the axis's highest
    derivative operator (``decade_rotation``). The eigenvectors within a decade are near
    arbitrary (the kernel's eigenvalues cluster: a flat mixture band, the jitter floor);
    rotated, the derivative operator is near-diagonal there too.

    Measured (CG relative residual after 1000 iterations, one Gauss-Newton system at
    200^2): poisson2d-sin6cos20 4.7e-7 -> 5.4e-9, advection-beta200 2.0 -> 2.9e-2,
    allencahn2d-multiscale 4.7e-5 -> 1.3e-5 (bins of a factor 3 or 100 did worse).
    Without R, this basis cut CG iterations 20-fold against a plain diagonal. The basis
    that diagonalises the axis's derivative operator outright (E_j = L_j W_j) gives a
    smaller condition number after scaling on small grids (40^2, 60^2), yet on 100^2 its
    CG stalled (relative residual ~1e-3 after 5000 iterations, rounding in L^{-1}).
    """
    out = []
    for j, l in enumerate(trils):
        lam, q = jnp.linalg.eigh(l @ l.T)
        lam = jnp.maximum(lam, lam[-1] * 1e-300)
        root = jnp.sqrt(lam)
        e, e_inv, k_inv_e = q * root, (q / root).T, q / root
        order = problem.axis_order(j)
        if order:
            b = derivative_matrix(problem, values, j, order) @ k_inv_e
            rot = decade_rotation(lam, b.T @ b)
            e, e_inv, k_inv_e = e @ rot, rot.T @ e_inv, k_inv_e @ rot
        out.append((e, e_inv, k_inv_e))
    return out


def decade_rotation(lam, gram):
    """The orthogonal R, block-diagonal over the decades of the ascending ``lam``, whose
    blocks are the eigenvectors of ``gram``'s diagonal blocks (on the host: the decades
    are data-dependent)."""

    def rotation(lam, gram):
        decade = np.floor(np.log10(lam))
        out = np.eye(len(lam))
        for d in np.unique(decade):
            ix = np.flatnonzero(decade == d)
            g = gram[np.ix_(ix, ix)]
            out[np.ix_(ix, ix)] = np.linalg.eigh(0.5 * (g + g.T))[1]
        return out

    return jax.pure_callback(rotation, jax.ShapeDtypeStruct(gram.shape, gram.dtype), lam, gram)


def equation_coefficients(problem, values, trils, u):
    """{derivative name: c_o on the grid}, the linearisation of L[u] at u in each field."""
    fields = derivative_fields(problem, values, trils, u)
    env = dict(problem.constants)
    env.update(unknown_values(problem, values))
    env.update(problem.coordinates())

    def ev(fs):
        return jnp.broadcast_to(problem.equation({**env, **fs}), u.shape)

    ones = jnp.ones(u.shape)
    return {name: jax.jvp(lambda f, n=name: ev({**fields, n: f}), (fields[name],), (ones,))[1]
            for name in fields}


def axis_operator(problem, values, bases, j, m):
    """B_j^m: whitened z along axis j -> d^m u / dx_j^m (K_j^(m) K_j^{-1} E_j)."""
    e, _, k_inv_e = bases[j]
    return e if m == 0 else derivative_matrix(problem, values, j, m) @ k_inv_e


def equation_diagonal(problem, values, trils, bases, u, sd_e):
    """The exact diagonal of I + J^T J in the eigen-whitened coordinates for every term
    but the boundary rows (the prior, the equation, the observations)."""
    coef = equation_coefficients(problem, values, trils, u)
    ops = {name: [axis_operator(problem, values, bases, j, m)
                  for j, m in enumerate(problem.derivatives[name])] for name in coef}
    diag = jnp.ones(problem.grid)
    for a in coef:
        for b in coef:
            mats = [(pa * pb).T for pa, pb in zip(ops[a], ops[b])]
            diag = diag + kron.kron_apply(mats, coef[a] * coef[b]) / sd_e**2
    if problem.observations is not None:
        points, _, noise = problem.observations
        sq = [(kernels.cross(problem.family, axis_params(problem, values, j),
                             jnp.asarray(points[:, j]), jnp.asarray(problem.axes[j]))
               @ bases[j][2]) ** 2 for j in range(problem.ndim)]
        diag = diag + jnp.sum(jax.vmap(lambda *rows: _outer(rows))(*sq), 0) / noise**2
    return diag


def boundary_diagonal(problem, bases, scale_b):
    """The diagonal of the boundary rows' part scale_b^2 B^T B."""
    diag = 0.0
    for face in problem.faces:
        row = 0 if face.side == "lo" else -1
        parts = [bases[j][0][row] ** 2 if j == face.axis else jnp.sum(bases[j][0] ** 2, 0)
                 for j in range(problem.ndim)]
        diag = diag + scale_b**2 * _outer(parts)
    return diag


def _outer(vectors):
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] * v
    return out


class FaceRows:
    """The boundary rows of J in 2-D, face by face: B_f z = E_c (r_f . z along axis a),
    r_f = row 0 or -1 of E_a (a the face's axis, c the other one)."""

    def __init__(self, problem, bases):
        self.faces = [(f.axis, bases[f.axis][0][0 if f.side == "lo" else -1],
                       bases[1 - f.axis][0]) for f in problem.faces]

    def apply(self, z):  # (..., N0, N1) -> (..., n_b)
        out = []
        for a, r, e in self.faces:
            t = jnp.tensordot(z, r, axes=([z.ndim - 2 + a], [0]))
            out.append(t @ e.T)
        return jnp.concatenate(out, axis=-1)

    def transpose(self, y):  # (..., n_b) -> (..., N0, N1)
        out, start = 0.0, 0
        for a, r, e in self.faces:
            t = y[..., start:start + e.shape[0]] @ e
            start += e.shape[0]
            out = out + (r[:, None] * t[..., None, :] if a == 0 else t[..., :, None] * r)
        return out


def exact_boundary_rows(problem):
    """True where the preconditioner takes the boundary rows exactly (Woodbury: 2-D);
    elsewhere it takes them by their diagonal only."""
    return problem.ndim == 2


def woodbury_preconditioner(problem, bases, diag, scale_b):
    """v -> P^{-1} v for P = D + scale_b^2 B^T B (2-D): the diagonal D of the other terms
    plus the boundary rows B exactly, by the Woodbury identity with the capacitance
    C = I / scale_b^2 + B D^{-1} B^T (n_b x n_b, formed face by face, Cholesky)."""
    rows = FaceRows(problem, bases)
    sizes = [e.shape[0] for *_, e in rows.faces]
    n_b, eye = sum(sizes), jnp.eye(sum(sizes))
    starts = np.cumsum([0] + sizes[:-1])
    c = jnp.concatenate([rows.apply(rows.transpose(eye[i:i + m]) / diag)  # face by face
                         for i, m in zip(starts, sizes)])
    c = 0.5 * (c + c.T) + jnp.eye(n_b) / scale_b**2
    c = c + 1e-12 * jnp.mean(jnp.diag(c)) * jnp.eye(n_b)  # corners repeat: C is near-singular
    chol = jnp.linalg.cholesky(c)

    def precond(v):
        y = v / diag
        t = rows.apply(y)
        s = jax.scipy.linalg.cho_solve((chol, True), jnp.moveaxis(t, -1, 0))
        return y - rows.transpose(jnp.moveaxis(s, 0, -1)) / diag

    return precond


def pcg(matvec, b, precond, tol, maxiter, ndim):
    """Preconditioned conjugate gradients for SPD ``matvec``, batched over leading axes of b
    (the last ``ndim`` axes are the grid); ``precond`` applies the inverse preconditioner.
    Stops when |H x - b| <= tol |b| for every right-hand side or after maxiter steps (|.|
    of CG's recursive residual); returns (x, iterations, the largest recomputed relative
    residual |b - H x| / |b|)."""
    axes = tuple(range(b.ndim - ndim, b.ndim))

    def dot(x, y):
        return jnp.sum(x * y, axis=axes, keepdims=True)

    bnorm = jnp.sqrt(dot(b, b))
    x = jnp.zeros_like(b)
    r = b
    z = precond(r)
    p = z
    rz = dot(r, z)

    def rel(r):
        return jnp.max(jnp.sqrt(dot(r, r)) / jnp.maximum(bnorm, 1e-300))

    def cond(state):
        k, x, r, p, rz = state
        return (k < maxiter) & (rel(r) > tol)

    def body(state):
        k, x, r, p, rz = state
        hp = matvec(p)
        alpha = rz / dot(p, hp)
        x = x + alpha * p
        r = r - alpha * hp
        z = precond(r)
        rz_new = dot(r, z)
        p = z + (rz_new / rz) * p
        return k + 1, x, r, p, rz_new

    k, x, r, _, _ = lax.while_loop(cond, body, (0, x, r, p, rz))
    return x, k, rel(b - matvec(x))


def gauss_newton_system(problem, values, trils, u):
    """(z0, bases, r0, jvp, vjp, H matvec, diag of H, preconditioner) of the linearisation
    at grid values u. The preconditioner: the diagonal, with the boundary rows exact
    (Woodbury) in 2-D."""
    bases = axis_bases(problem, values, trils)
    z0 = kron.kron_apply([b[1] for b in bases], u)
    e = [b[0] for b in bases]
    d = problem.ndim

    def f(z):
        return data_residual(problem, values, trils, kron.kron_apply(e, z))

    r0, jvp = jax.linearize(f, z0)
    transpose = jax.linear_transpose(jvp, z0)

    def vjp(v):
        return transpose(v)[0]

    def hess(v):  # batched over leading axes
        flat = v.reshape((-1,) + v.shape[v.ndim - d:])
        out = flat + jax.vmap(lambda x: vjp(jvp(x)))(flat)
        return out.reshape(v.shape)

    inner = equation_diagonal(problem, values, trils, bases, u, equation_sd(problem, values))
    if not problem.faces:
        return z0, bases, r0, jvp, vjp, hess, inner, lambda v: v / inner
    scale_b = boundary_scale(problem, values)
    diag = inner + boundary_diagonal(problem, bases, scale_b)
    precond = (woodbury_preconditioner(problem, bases, inner, scale_b)
               if exact_boundary_rows(problem) else lambda v: v / diag)
    return z0, bases, r0, jvp, vjp, hess, diag, precond


def newton_step(problem, values, trils, u, tol, maxiter):
    """One Gauss-Newton step on U at fixed hyperparameters, solved by PCG (exact for a
    linear PDE): returns (U, CG iterations, recomputed relative residual)."""
    z0, bases, r0, _, vjp, hess, _, precond = gauss_newton_system(problem, values, trils, u)
    dz, k, res = pcg(hess, -(z0 + vjp(r0)), precond, tol, maxiter, problem.ndim)
    return kron.kron_apply([b[0] for b in bases], z0 + dz), k, res
