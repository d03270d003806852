"""1-D stationary kernels (spectral and student-t mixtures, Matern-5/2, SE) and their
closed-form derivatives of orders 0, 1 and 2.
"""

import math

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

FAMILIES = ("student-t-mixture", "gaussian-mixture", "matern52", "se")
_SQRT5 = math.sqrt(5.0)


def has_frequencies(family: str) -> bool:
    """True for the spectral families, whose components carry a frequency mu."""
    return family in ("student-t-mixture", "gaussian-mixture")


def squared_envelope(family: str) -> bool:
    """True where rho is an inverse squared length (exp(-rho r^2)), False where it is an
    inverse length (the Matern-5/2 envelope)."""
    return _ENVELOPE[family] is _se


def _matern52(r, rho, order):
    a = _SQRT5 * rho
    ar = a * jnp.abs(r)
    e = jnp.exp(-ar)
    if order == 0:
        return (1.0 + ar + ar**2 / 3.0) * e
    if order == 1:
        return -(a**2 / 3.0) * r * (1.0 + ar) * e
    return -(a**2 / 3.0) * (1.0 + ar - ar**2) * e


def _se(r, rho, order):
    # exp(-rho r^2): rho is an inverse squared length scale, as in the reference code.
    g = jnp.exp(-rho * r**2)
    if order == 0:
        return g
    if order == 1:
        return -2.0 * rho * r * g
    return (4.0 * rho**2 * r**2 - 2.0 * rho) * g


def _cosine(r, mu, order):
    om = 2.0 * jnp.pi * mu
    if order == 0:
        return jnp.cos(om * r)
    if order == 1:
        return -om * jnp.sin(om * r)
    return -(om**2) * jnp.cos(om * r)


_ENVELOPE = {
    "student-t-mixture": _matern52,
    "gaussian-mixture": _se,
    "matern52": _matern52,
    "se": _se,
}
_BINOMIAL = {0: (1,), 1: (1, 1), 2: (1, 2, 1)}


def evaluate(family: str, params: dict, r: ArrayLike, order: int = 0) -> Array:
    """d^order k(r)/dx^order summed over components; r any shape, params of shape (Q,).

    k(r) = sum_q w_q * envelope(r; rho_q) [* cos(2 pi mu_q r)], r = x - x': order 1 is
    odd in r and order 2 even.
    """
    if order not in _BINOMIAL:
        raise ValueError(f"kernel derivative order {order} is not supported (0, 1 or 2)")
    r = jnp.asarray(r)[..., None]
    w = jnp.exp(params["log_w"])
    rho = jnp.exp(params["log_rho"])
    env = _ENVELOPE[family]
    if not has_frequencies(family):
        return jnp.sum(w * env(r, rho, order), axis=-1)
    mu = params["mu"]
    total = 0.0
    for k, c in enumerate(_BINOMIAL[order]):  # Leibniz rule for envelope * cosine
        total = total + c * env(r, rho, k) * _cosine(r, mu, order - k)
    return jnp.sum(w * total, axis=-1)


def toeplitz(family: str, params: dict, x: ArrayLike, order: int = 0) -> Array:
    """The N x N matrix d^order k(x_i - x_j)/dx_i^order on a uniform axis x.

    The kernel is evaluated on the 2N-1 lags only, then gathered.
    """
    n = x.shape[0]
    lags = x - x[0]
    r = jnp.concatenate([-lags[:0:-1], lags])
    values = evaluate(family, params, r, order)
    idx = jnp.arange(n)[:, None] - jnp.arange(n)[None, :] + (n - 1)
    return values[idx]


def cross(family: str, params: dict, xa: ArrayLike, xb: ArrayLike, order: int = 0) -> Array:
    """The len(xa) x len(xb) matrix d^order k(xa_i - xb_j)/dxa^order (any points)."""
    return evaluate(family, params, xa[:, None] - xb[None, :], order)
