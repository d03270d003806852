"""1-D stationary kernels (spectral and student-t mixtures, Matern-5/2, SE) and their
closed-form derivatives of orders 0, 1 and 2.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

FAMILIES = ("student-t-mixture", "gaussian-mixture", "matern52", "se")
_SQRT5 = math.sqrt(5.0)


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


@dataclass(frozen=True)
class Family:
    """A kernel family: its envelope, whether its components carry a frequency mu, how
    rho relates to a length scale l (rho = l^-power: exp(-rho r^2) has power 2, the
    Matern-5/2 envelope power 1), and the longest length (in axis lengths) that its
    learning box allows (longer is too ill-conditioned at the recipes' jitter)."""

    name: str
    envelope: Callable
    frequencies: bool
    power: float
    longest: float

    def site_names(self, v: str) -> list[str]:
        """The sites of axis ``v``'s kernel parameters."""
        return [f"log_w_{v}", f"log_rho_{v}"] + ([f"mu_{v}"] if self.frequencies else [])

    def axis_params(self, values: dict, v: str) -> dict:
        """Axis ``v``'s parameters from site values: {log_w, log_rho[, mu]}."""
        return {name.rsplit(f"_{v}", 1)[0]: values[name] for name in self.site_names(v)}

    def initial(self, v: str, q: int, max_frequency: float) -> dict:
        """Equal weights, rho = 1 and (spectral families) mu spread over [0, max_frequency]."""
        out = {f"log_w_{v}": jnp.full(q, np.log(1.0 / q)), f"log_rho_{v}": jnp.zeros(q)}
        if self.frequencies:
            out[f"mu_{v}"] = jnp.asarray(np.linspace(0.0, 1.0, q) * max_frequency)
        return out

    def length(self, rho: ArrayLike) -> ArrayLike:
        """The length scale of envelope parameter rho."""
        return rho ** (-1.0 / self.power)

    def log_rho(self, length: ArrayLike) -> ArrayLike:
        """log rho of the envelope of length scale ``length``."""
        return -self.power * np.log(length)


MAX_SE_LENGTH = 0.5  # axis lengths: SE envelopes
MAX_MATERN_LENGTH = 10.0  # axis lengths: Matern-5/2 envelopes
_FAMILIES = {f.name: f for f in (
    Family("student-t-mixture", _matern52, True, 1.0, MAX_MATERN_LENGTH),
    Family("gaussian-mixture", _se, True, 2.0, MAX_SE_LENGTH),
    Family("matern52", _matern52, False, 1.0, MAX_MATERN_LENGTH),
    Family("se", _se, False, 2.0, MAX_SE_LENGTH))}


def family(name: str) -> Family:
    """The kernel family of that name (one of FAMILIES)."""
    return _FAMILIES[name]


PLAIN = tuple(name for name in FAMILIES if not _FAMILIES[name].frequencies)  # no frequencies


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
    fam = _FAMILIES[family]
    env = fam.envelope
    if not fam.frequencies:
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
    """The len(xa) x len(xb) matrix d^order k(xa_i - xb_j)/dxa^order (any points). Where
    both are concrete uniform axes of one spacing (a grid axis and its cell midpoints) the
    differences take len(xa) + len(xb) - 1 values: the kernel is evaluated on those only,
    then gathered (a mixture's cross matrix costs Q exponentials per entry otherwise)."""
    h = _common_spacing(xa, xb)
    if h is None:
        return evaluate(family, params, jnp.asarray(xa)[:, None] - jnp.asarray(xb)[None, :],
                        order)
    na, nb = len(xa), len(xb)
    r = (xa[0] - xb[0]) + h * np.arange(-(nb - 1), na)
    idx = np.arange(na)[:, None] - np.arange(nb)[None, :] + (nb - 1)
    return evaluate(family, params, r, order)[idx]


def _common_spacing(xa, xb) -> float | None:
    """The spacing h when xa and xb are concrete (numpy) uniform axes of spacing h, else None."""
    if not (isinstance(xa, np.ndarray) and isinstance(xb, np.ndarray)) or min(len(xa), len(xb)) < 2:
        return None
    h = float(xb[1] - xb[0])
    uniform = [np.allclose(np.diff(x), h, rtol=1e-12, atol=0.0) for x in (xa, xb)]
    return h if all(uniform) and h > 0 else None
