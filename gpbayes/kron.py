"""Kronecker algebra on grid tensors (mode products, solves, log-determinants) and the
KroneckerNormal distribution; nothing here forms an N x N matrix for the whole grid.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import solve_triangular
from numpyro.distributions import Distribution, constraints


def mode_dot(a: Array, u: Array, axis: int) -> Array:
    """Multiply u by the matrix a along ``axis`` (the mode product a x_axis u)."""
    moved = jnp.moveaxis(u, axis, -1)
    return jnp.moveaxis(moved @ a.T, -1, axis)


def mode_solve_tril(l: Array, u: Array, axis: int, transpose: bool = False) -> Array:
    """Solve L X = U (or L^T X = U) along ``axis``, L lower triangular."""
    moved = jnp.moveaxis(u, axis, 0)
    shape = moved.shape
    x = solve_triangular(l, moved.reshape(shape[0], -1), lower=True, trans=1 if transpose else 0)
    return jnp.moveaxis(x.reshape(shape), 0, axis)


def mode_cho_solve(l: Array, u: Array, axis: int) -> Array:
    """Solve (L L^T) X = U along ``axis``."""
    return mode_solve_tril(l, mode_solve_tril(l, u, axis), axis, transpose=True)


def kron_apply(mats: Sequence[Array], u: Array) -> Array:
    """(A_1 kron ... kron A_d) vec(U), on the last d axes of u."""
    d = len(mats)
    for j, a in enumerate(mats):
        u = mode_dot(a, u, u.ndim - d + j)
    return u


def kron_whiten(trils: Sequence[Array], u: Array) -> Array:
    """(L_1 kron ... kron L_d)^{-1} vec(U), on the last d axes of u."""
    d = len(trils)
    for j, l in enumerate(trils):
        u = mode_solve_tril(l, u, u.ndim - d + j)
    return u


def kron_solve(trils: Sequence[Array], u: Array) -> Array:
    """K^{-1} vec(U) with K = kron_j L_j L_j^T, on the last d axes of u."""
    d = len(trils)
    for j, l in enumerate(trils):
        u = mode_cho_solve(l, u, u.ndim - d + j)
    return u


def kron_logdet(trils: Sequence[Array]) -> Array:
    """log|K_1 kron ... kron K_d| from the per-axis Cholesky factors."""
    sizes = [l.shape[0] for l in trils]
    n = math.prod(sizes)
    return sum((n // nj) * 2.0 * jnp.sum(jnp.log(jnp.diag(l))) for nj, l in zip(sizes, trils))


class KroneckerNormal(Distribution):
    """Zero-mean normal on a grid tensor with covariance K_1 kron ... kron K_d.

    ``scale_trils`` are the per-axis lower Cholesky factors L_j (K_j = L_j L_j^T).
    The event shape is the grid shape (N_1, ..., N_d).
    """

    arg_constraints = {}
    reparametrized_params = []

    def __init__(self, scale_trils, validate_args=None):
        self.scale_trils = tuple(scale_trils)
        event_shape = tuple(l.shape[-1] for l in self.scale_trils)
        super().__init__(batch_shape=(), event_shape=event_shape, validate_args=validate_args)

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def log_prob(self, value):
        d = len(self.event_shape)
        z = kron_whiten(self.scale_trils, value)
        n = math.prod(self.event_shape)
        quad = jnp.sum(z**2, axis=tuple(range(-d, 0)))
        return -0.5 * quad - 0.5 * kron_logdet(self.scale_trils) - 0.5 * n * math.log(2 * math.pi)

    def sample(self, key, sample_shape=()):
        z = jax.random.normal(key, tuple(sample_shape) + self.event_shape)
        return kron_apply(self.scale_trils, z)

    @property
    def mean(self):
        return jnp.zeros(self.event_shape)

    @property
    def variance(self):
        diags = [jnp.sum(l**2, axis=-1) for l in self.scale_trils]
        out = diags[0]
        for dg in diags[1:]:
            out = out[..., None] * dg
        return out
