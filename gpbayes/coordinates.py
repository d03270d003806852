"""The coordinates grid values come in: U itself (a plain array), whitened z (``Whitened``:
U = (L_1 kron ... kron L_d) z) or the Gauss-Newton operator's rotated s
(``gauss_newton.Rotated``). Each is a pytree that knows how the conditional mean's
derivative along one axis, the weights K^{-1} U and U itself are computed from it, given
the ``Conditional`` whose factors it uses; the Conditional's methods take any of them.
"""

from dataclasses import dataclass

import jax
from jax import Array

from gpbayes import kron


class Coordinates:
    """Grid values in some coordinates: ``array`` (the grid on its last d axes)."""

    array: Array

    def derivative(self, cond, f: Array, j: int, m: int) -> Array:
        """d^m / dx_j^m of the conditional mean along axis j of ``f`` (axis j of the grid,
        no batch axes), axes before j already mapped to the mean's values."""
        raise NotImplementedError

    def weights(self, cond) -> Array:
        """K^{-1} vec(U), the weights of the conditional mean (leading batch axes kept)."""
        raise NotImplementedError

    def grid(self, cond) -> Array:
        """U on the grid."""
        raise NotImplementedError


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Grid(Coordinates):
    """U itself: m > 0 applies k_j^(m) K_j^{-1}, m = 0 the mean's values U - jitter K^{-1} U."""

    array: Array

    def derivative(self, cond, f: Array, j: int, m: int) -> Array:
        w = kron.mode_cho_solve(cond.trils[j], f, j)
        return kron.mode_dot(cond.kernel_matrix(j, m), w, j) if m else f - cond.jitter * w

    def weights(self, cond) -> Array:
        return kron.kron_solve(cond.trils, self.array)

    def grid(self, cond) -> Array:
        return self.array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Whitened(Coordinates):
    """z with U = (L_1 kron ... kron L_d) z: axis j applies k_j^(m) L_j^{-T} (m > 0) or
    L_j - jitter L_j^{-T} (m = 0), one triangular solve, which keeps the rounding of an
    ill-conditioned K_j (small jitter) out of the fields."""

    array: Array

    def derivative(self, cond, f: Array, j: int, m: int) -> Array:
        l = cond.trils[j]
        w = kron.mode_solve_tril(l, f, j, True)
        return kron.mode_dot(cond.kernel_matrix(j, m), w, j) if m \
            else kron.mode_dot(l, f, j) - cond.jitter * w

    def weights(self, cond) -> Array:  # K^{-1} L = L^{-T}
        c, d = self.array, cond.problem.ndim
        for j, l in enumerate(cond.trils):
            c = kron.mode_solve_tril(l, c, c.ndim - d + j, transpose=True)
        return c

    def grid(self, cond) -> Array:
        """L z; one 1-D grid vector as a plain product: at jitter 3e-11 the 1-D dense
        solve's error sits at the rounding floor, and this order of operations is the one
        its figures were measured with (benchmarks/journal.md)."""
        z = self.array
        return cond.trils[0] @ z if z.ndim == 1 else kron.kron_apply(cond.trils, z)


def coordinates(c: Array | Coordinates) -> Coordinates:
    """``c`` as coordinates: a plain array is U itself."""
    return c if isinstance(c, Coordinates) else Grid(c)
