"""The model at fixed hyperparameters (``Conditional``): the one object every solver, result
and plot uses for the factors, the expression environment, fields, residuals, the log
joint, prediction and the Gauss-Newton operator.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.linalg import solve_triangular

from gpbayes import gauss_newton, kernels, kron
from gpbayes.boundary import is_affine
from gpbayes.coordinates import Coordinates, Whitened, coordinates
from gpbayes.infer.solvers import dense_gauss_newton, least_squares
from gpbayes.linalg import predictive

LOG_2PI = math.log(2 * math.pi)


def axis_params(problem, values: dict, j: int) -> dict:
    """The kernel parameters of axis j from site values, as a dict (log_w, log_rho[, mu])."""
    return kernels.family(problem.family).axis_params(values, problem.variables[j])


def unknown_values(problem, values: dict) -> dict:
    """{name: value} of the unknown constants from site values (lognormal: exp of log_)."""
    return {name: values[site] if site == name else jnp.exp(values[site])
            for name, site in problem.unknown_sites.items()}


def operator(problem, unknowns: dict, fields: dict, axes=None) -> Array:
    """L[u] from u's fields on the tensor grid spanned by ``axes`` (default: the grid), the
    unknown constants at ``unknowns``: the equation alone needs no kernel factors."""
    axes = problem.axes if axes is None else axes
    env = problem.environment(problem.coordinates(axes), {**unknowns, **fields})
    return jnp.broadcast_to(problem.equation(env), tuple(len(x) for x in axes))


def coefficients(problem, unknowns: dict, fields: dict, axes=None) -> dict:
    """{field name: dL/d field on the grid}: L[u] linearised at ``fields`` (L is pointwise
    in u's fields; on the grid spanned by ``axes``, default the grid)."""
    def part(name):
        def op(g):
            return operator(problem, unknowns, {**fields, name: g}, axes)
        return jax.jvp(op, (fields[name],), (jnp.ones_like(fields[name]),))[1]

    return {n: part(n) for n in fields}


def is_linear(problem, unknowns: dict) -> bool:
    """True when L[u] is affine in u's fields (checked on random fields)."""
    return is_affine(lambda fields: operator(problem, unknowns, fields),
                     list(problem.derivatives), problem.grid)


def with_factors(problem, values: dict, jitter: float) -> "Conditional":
    """A Conditional built in one compiled call (built outside one, each small operation
    of the kernel's matrices runs and compiles on its own): for a sampler that holds the
    kernel and evaluates the model many times (``gpbayes.model.pde_model(..., held=...)``)."""
    return jax.jit(lambda v: Conditional(problem, v, jitter))(values)


@jax.tree_util.register_pytree_node_class
class Conditional:
    """The model of ``problem`` at the site values ``values`` (every site but U), with the
    kernel's factors on the grid: ``kernel`` (the parameters per axis, ``axis_params``),
    ``matrices`` ({(axis, order): k_j^(m)(x_j, x_j)}, ``Problem.kernel_orders``) and ``trils``
    (per axis the lower Cholesky factor of K_j = k_j(x_j, x_j) + jitter I).

    Immutable, and a pytree (the factors are its leaves): built once, it can be passed
    into a compiled function or returned from one (``with_factors``), and ``with_values``
    shares the factors. Grid values come in any ``gpbayes.coordinates`` (a plain array
    is U).
    """

    __slots__ = ("problem", "values", "jitter", "kernel", "matrices", "trils")

    def __init__(self, problem, values: dict, jitter: float):
        kernel = [axis_params(problem, values, j) for j in range(problem.ndim)]
        matrices = {(j, m): kernels.toeplitz(problem.family, kernel[j],
                                              jnp.asarray(problem.axes[j]), m)
                    for j, m in problem.kernel_orders}
        trils = [jnp.linalg.cholesky(matrices[j, 0] + jitter * jnp.eye(len(x)))
                 for j, x in enumerate(problem.axes)]
        self._set(problem, values, jitter, kernel, matrices, trils)

    def _set(self, *fields) -> None:
        for name, value in zip(self.__slots__, fields):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("a Conditional is immutable: use with_values")

    def tree_flatten(self) -> tuple:
        return (self.values, self.kernel, self.matrices, self.trils), (self.problem, self.jitter)

    @classmethod
    def tree_unflatten(cls, aux: tuple, leaves: tuple) -> "Conditional":
        out = object.__new__(cls)
        values, kernel, matrices, trils = leaves
        out._set(aux[0], values, aux[1], kernel, matrices, trils)
        return out

    @property
    def unknowns(self) -> dict:
        """{name: value} of the unknown constants."""
        return unknown_values(self.problem, self.values)

    def with_values(self, updates: dict) -> "Conditional":
        """The same model with some site values replaced (the factors shared if only
        precisions and unknowns change, else computed anew)."""
        values = {**self.values, **updates}
        p = self.problem
        if not all(k.startswith("log_tau") or k in p.unknown_sites.values() for k in updates):
            return Conditional(p, values, self.jitter)
        out = object.__new__(Conditional)
        out._set(p, values, self.jitter, self.kernel, self.matrices, self.trils)
        return out

    # -- the kernel on the grid ---------------------------------------------------------

    def kernel_matrix(self, j: int, m: int = 0) -> Array:
        """k_j^(m)(x_j, x_j): the kernel's m-th derivative along axis j on the grid axis
        (the orders of ``Problem.kernel_orders``)."""
        return self.matrices[j, m]

    def cross(self, j: int, points, m: int = 0) -> Array:
        """k_j^(m)(points, x_j): from the grid axis j to any points on that axis."""
        return kernels.cross(self.problem.family, self.kernel[j], points,
                             np.asarray(self.problem.axes[j]), m)

    # -- coordinates ----------------------------------------------------------------------

    def whiten(self, u: Array) -> Array:
        """z with U = (L_1 kron ... L_d) z (on the last d axes)."""
        if u.ndim == 1:  # one grid vector: a plain triangular solve (see to_grid)
            return solve_triangular(self.trils[0], u, lower=True)
        return kron.kron_whiten(self.trils, u)

    def to_grid(self, c: Array | Coordinates) -> Array:
        """The grid values U from coordinates ``c`` (on the last d axes)."""
        return coordinates(c).grid(self)

    def weights(self, c: Array | Coordinates) -> Array:
        """K^{-1} vec(U), the weights of the conditional mean."""
        return coordinates(c).weights(self)

    # -- the equation ---------------------------------------------------------------------

    def fields(self, c: Array | Coordinates, derivatives: dict | None = None) -> dict:
        """u and the equation's derivatives (or ``derivatives``, {name: orders}) on the
        grid, by name, from the GP conditional mean: d^m u / dx_j^m = k_j^(m) K_j^{-1} U
        along axis j (``Coordinates.derivative``), m = 0 included: the values are the
        mean's, k_j K_j^{-1} U = U - jitter K_j^{-1} U, the function every prediction
        reports, not U (the jitter's white part in U is invisible to the derivatives:
        taking U for the values and the Dirichlet rows cost smooth problems 10-200x in
        accuracy, benchmarks/journal.md)."""
        c = coordinates(c)
        out = {}
        derivatives = self.problem.derivatives if derivatives is None else derivatives
        for name, orders in derivatives.items():
            f = c.array
            for j, m in enumerate(orders):
                f = c.derivative(self, f, j, m)
            out[name] = f  # XLA merges the repeated solves along an axis
        return out

    def operator(self, fields: dict, axes=None) -> Array:
        """L[u] from u's fields on the tensor grid spanned by ``axes`` (default: the grid)."""
        return operator(self.problem, self.unknowns, fields, axes)

    def residual(self, c: Array | Coordinates) -> Array:
        """L[u] - f on every grid point."""
        return self.operator(self.fields(c)) - self.problem.source_values

    def fields_on(self, c: Array | Coordinates, axes) -> dict:
        """u and the equation's derivatives by name on the tensor grid spanned by ``axes``,
        from the conditional mean."""
        return {name: self.predict_grid(c, axes, orders=orders)
                for name, orders in self.problem.derivatives.items()}

    def residual_on(self, u: Array, axes, source: Array | None = None) -> Array:
        """L[u] - f on the tensor grid spanned by ``axes`` (e.g. the cell midpoints), from
        the conditional mean of u and its derivatives there (``source``: f there, if known;
        pass it inside a traced function)."""
        f = self.problem.source_on(axes) if source is None else source
        return self.operator(self.fields_on(u, axes), axes) - f

    def coefficients(self, fields: dict, axes=None) -> dict:
        """{field name: dL/d field}: ``coefficients`` at this model's unknowns."""
        return coefficients(self.problem, self.unknowns, fields, axes)

    def term_scale(self, fields: dict, axes) -> Array:
        """The rms of the equation's largest term on ``axes``: each field's part of L[u],
        (dL/d field) * field (coefficient x field where L is linear). A residual is small
        against this, not against f, which may vanish (u_t + c u_x = 0)."""
        coef = self.coefficients(fields, axes)
        return jnp.max(jnp.stack([jnp.sqrt(jnp.mean((coef[n] * fields[n]) ** 2))
                                  for n in fields]))

    def is_linear(self) -> bool:
        """True when L[u] is affine in u's fields (``is_linear``)."""
        return is_linear(self.problem, self.unknowns)

    # -- the likelihood -------------------------------------------------------------------

    def face_operator(self, condition, face, fields: dict) -> Array:
        """A condition's operator on one face (flattened), from fields on the grid."""
        names = condition.derivatives(self.problem.variables)
        return self.problem.face_operator(condition, face,
                                          {n: face.slab(fields[n]) for n in names}, self.unknowns)

    def boundary_difference(self, c: Array | Coordinates) -> Array:
        """operator[u] - g on every boundary part (a condition on a face), each face whole
        (corners count once per face); periodic parts: operator[u] on the lo face minus on
        the hi face."""
        p = self.problem
        if not p.conditions:
            return jnp.zeros(0)
        u = self.fields(c, {"u": (0,) * p.ndim})["u"]  # the mean, as the fields
        need = p.boundary_derivatives
        fields = self.fields(c, need) if need else {}
        parts = []
        for condition, face in p.boundary_parts:
            if condition.dirichlet:
                parts.append(face.take(u))
                continue
            v = self.face_operator(condition, face, fields)
            if condition.periodic:
                v = v - self.face_operator(condition, face.opposite(), fields)
            parts.append(v)
        return jnp.concatenate(parts) - p.boundary_values

    def face_coefficients(self, condition, face) -> dict:
        """{field name: its coefficient on the face (flattened)}: the operator's
        linearisation (it is affine in u's fields), d operator / d field."""
        p = self.problem
        names = condition.derivatives(p.variables)
        shape = tuple(len(x) for x in face.axes(p.axes))
        if condition.operator is None:
            return {"u": jnp.ones(int(np.prod(shape)))}
        zeros = {n: jnp.zeros(shape) for n in names}

        def op(name, g):
            return p.face_operator(condition, face, {**zeros, name: g}, self.unknowns)

        return {n: jax.jvp(lambda g, n=n: op(n, g), (zeros[n],), (jnp.ones(shape),))[1]
                for n in names}

    def boundary_size(self, u: Array) -> Array:
        """The rms size of the conditions' terms, for a relative boundary mismatch: per
        part, the largest |coefficient| x rms of its field over the grid (for Dirichlet
        parts, rms U)."""
        p = self.problem
        if not p.conditions:
            return jnp.zeros(())
        names = {n: o for c in p.conditions for n, o in c.derivatives(p.variables).items()}
        rms = {n: jnp.sqrt(jnp.mean(f**2)) for n, f in self.fields(u, names).items()}
        sizes = []
        for (condition, face), m in zip(p.boundary_parts, p.part_sizes):
            coef = self.face_coefficients(condition, face)
            size = jnp.max(jnp.stack([jnp.sqrt(jnp.mean(coef[n] ** 2)) * rms[n] for n in coef]))
            sizes.append(m * size**2)
        return jnp.sqrt(sum(sizes) / sum(p.part_sizes))

    @property
    def equation_sd(self) -> Array | float:
        """The sd of the equation residual (its noise sd, or tau_e^{-1/2})."""
        if self.problem.equation_noise is not None:
            return self.problem.equation_noise
        return jnp.exp(-0.5 * self.values["log_tau_e"])

    @property
    def boundary_scale(self) -> Array:
        """The factor of each boundary row's mismatch in the residual (1/noise sd, or
        sqrt(w tau_b) with w the row's condition's weight)."""
        p = self.problem
        t = p.tempered_rows
        noisy = 1.0 / np.where(t, 1.0, p.row_noise)
        if not t.any():
            return jnp.asarray(noisy)
        tempered = jnp.sqrt(jnp.asarray(p.row_weights) * jnp.exp(self.values["log_tau_b"]))
        return jnp.where(t, tempered, noisy)

    def data_residual(self, c: Array | Coordinates) -> Array:
        """The model's data terms as one weighted residual vector r, minus the log joint
        being |z|^2/2 + |r|^2/2 + const: the boundary mismatch (heavy rows first, which
        keeps a Householder QR accurate), the equation residual over its sd and the
        observations over their noise sd."""
        p = self.problem
        parts = []
        b = self.boundary_difference(c)
        if b.size:
            parts.append(self.boundary_scale * b)
        parts.append(self.residual(c).reshape(-1) / self.equation_sd)
        if p.observations is not None:
            points, data, noise = p.observations
            parts.append((self.predict(c, points) - jnp.asarray(data)) / noise)
        return jnp.concatenate(parts)

    @property
    def log_constant(self) -> Array:
        """The log joint's terms that do not depend on U: normalising constants, the
        log-determinant of K and the unknowns' priors (the other priors are flat)."""
        p = self.problem
        n = p.size
        out = -0.5 * kron.kron_logdet(self.trils) - 0.5 * n * LOG_2PI
        out = out - n * jnp.log(self.equation_sd) - 0.5 * n * LOG_2PI
        t = p.tempered_rows
        out = out - np.sum(np.log(p.row_noise[~t])) - np.sum(~t) * 0.5 * LOG_2PI
        if t.any():
            w = p.row_weights[t].sum()
            out = out + w * (0.5 * self.values["log_tau_b"] - 0.5 * LOG_2PI)
        if p.observations is not None:
            m, noise = len(p.observations[1]), p.observations[2]
            out = out - m * (math.log(noise) + 0.5 * LOG_2PI)
        out = out - 0.5 * jnp.sum(self.prior_residual**2)
        for _, _, scale in p.unknowns.values():
            out = out - math.log(scale) - 0.5 * LOG_2PI
        return out

    @property
    def prior_residual(self) -> Array:
        """(site - loc) / scale of each unknown's site (its normal prior as a residual)."""
        p = self.problem
        if not p.unknowns:
            return jnp.zeros(0)
        return jnp.stack([(self.values[p.unknown_sites[n]] - loc) / scale
                          for n, (_, loc, scale) in p.unknowns.items()])

    def log_joint(self, u: Array) -> Array:
        """The model's log joint at grid values u (equal to ``gpbayes.log_density``)."""
        return self.log_joint_of(self.whiten(u), self.data_residual(u))

    def log_joint_of(self, z: Array, r: Array) -> Array:
        """The log joint from whitened U and its ``data_residual`` r (e.g. from U's linear
        system, J z - d: through the fields the equation rows' cancellation leaves |r|^2
        noisy by O(10) at tau_e ~ 1e9)."""
        return self.log_constant - 0.5 * jnp.sum(z**2) - 0.5 * jnp.sum(r**2)

    def u_given_rest(self, at: Array | None = None) -> tuple[Array, Array, Array]:
        """U's Gaussian given every other site where the data terms are affine in U (a
        linear PDE): z ~ N(z*, (R^T R)^{-1}) in whitened coordinates, z* minimising
        |z|^2/2 + |r(z)|^2/2 (``data_residual``) by dense QR; returns (z*, R, r(z*)),
        r(z*) from the Jacobian (J z* - d: evaluated through the fields instead, the
        equation rows' cancellation leaves |r|^2 noisy by O(10) at tau_e ~ 1e11).
        ``at`` (whitened U): the same for the data terms linearised there (a Laplace
        approximation where they are not affine). Dense: O(N^3) for N grid points."""
        n = self.problem.size
        jac, rhs = self.linear_system(at)
        x, r = least_squares(jac, rhs)
        return x.reshape(self.problem.grid), r, (jac @ x - rhs)[:-n]

    def evidence_given_pde(self, at: Array | None = None) -> tuple[Array, Array, Array]:
        """The measurements' (``evidence_rows``) Gaussian predictive given the PDE's own
        rows, where the data terms are affine in U (else linearised ``at``, as in
        ``u_given_rest``): returns (z*, r(z*), log density of the measurements in data
        units), z* U's mode given all rows (as ``u_given_rest``).
        One QR of the PDE's rows (``linalg.predictive``) instead of one of all rows and
        one of the PDE's: the ratio of the two marginals, better conditioned."""
        p, n = self.problem, self.problem.size
        jac, rhs = self.linear_system(at)
        e = self._evidence_and_prior_rows
        rows = (jac[~e], rhs[~e], jac[e], rhs[e])
        x = predictive.mode(*rows)
        return x.reshape(p.grid), (jac @ x - rhs)[:-n], predictive.log_density(*rows) - self._units

    def evidence_matrix_free(self, u: Array, tol: float, cov_tol: float, maxiter: int,
                             warm: tuple | None = None) -> tuple:
        """``evidence_given_pde`` for a linear PDE on any grid, no matrix formed (PCG
        solves with implicit derivatives: ``predictive.structured``), U's conditional mode
        solved from grid values ``u`` (or from ``warm``, the solves at nearby values):
        returns (U at the mode, r there, log density, the solves for ``warm``)."""
        gn = self.gauss_newton(u)
        s, r, log_p, solves = predictive.structured(gn, self.evidence_rows, tol, cov_tol,
                                                    maxiter, warm)
        return gn.to_grid(s), r, log_p - self._units, solves

    @property
    def _units(self) -> float:
        """log of the measurements' noise sds: the rows are (prediction - data) / noise."""
        p = self.problem
        units = float(np.sum(np.log(p.row_noise[~p.tempered_rows])))
        if p.observations is not None:
            units += len(p.observations[1]) * math.log(p.observations[2])
        return units

    def pde_mode(self, start: Array, steps: int) -> Array:
        """U's mode (whitened) given the PDE's own rows and its prior, the measurements
        left out: ``steps`` Gauss-Newton steps from ``start`` (whitened U); where the PDE
        is nonlinear in U, ``evidence_given_pde`` is linearised there."""
        keep = ~self._evidence_and_prior_rows
        x, _ = dense_gauss_newton(lambda x: self._stacked_residual(x)[keep],
                                  start.reshape(-1), steps)
        return x.reshape(self.problem.grid)

    def linear_system(self, at: Array | None = None) -> tuple[Array, Array]:
        """(J, d): [data_residual(z); z] = J z - d, linearised at ``at`` (whitened U;
        default 0: exact where the data terms are affine in z)."""
        x = jnp.zeros(self.problem.size) if at is None else at.reshape(-1)
        jac = jax.jacfwd(self._stacked_residual)(x)
        return jac, jac @ x - self._stacked_residual(x)

    def _stacked_residual(self, x: Array) -> Array:
        """[data_residual(z); z] for flat whitened x: minus the log joint is |.|^2/2."""
        return jnp.concatenate([self.data_residual(Whitened(x.reshape(self.problem.grid))), x])

    @property
    def _evidence_and_prior_rows(self) -> np.ndarray:
        """``evidence_rows`` over the stacked residual's rows (the prior's: False)."""
        return np.concatenate([self.evidence_rows, np.zeros(self.problem.size, bool)])

    @property
    def evidence_rows(self) -> np.ndarray:
        """Which rows of ``data_residual`` are measurements (the observations, boundary
        rows with a noise sd) rather than the PDE's own data (the equation's source, the
        exact boundary rows)."""
        p = self.problem
        parts = [~p.tempered_rows if p.conditions else np.zeros(0, bool),
                 np.zeros(p.size, bool)]
        if p.observations is not None:
            parts.append(np.ones(len(p.observations[1]), bool))
        return np.concatenate(parts)

    @property
    def row_scales(self) -> Array:
        """The factor of each row of ``data_residual``: ``boundary_scale``, 1/equation_sd,
        1/noise sd (only the precisions' rows change with them)."""
        p = self.problem
        parts = [self.boundary_scale] if p.conditions else []
        parts.append(jnp.broadcast_to(1.0 / self.equation_sd, (p.size,)))
        if p.observations is not None:
            parts.append(jnp.full(len(p.observations[1]), 1.0 / p.observations[2]))
        return jnp.concatenate(parts)

    def split_data_residual(self, r: Array) -> tuple[Array, Array, Array | None]:
        """``data_residual``'s parts, unweighted: (boundary_difference, residual on the
        grid, the prediction at the observation points or None)."""
        p = self.problem
        nb = int(p.boundary_values.size) if p.conditions else 0
        r = r / self.row_scales
        gap, eq = r[:nb], r[nb:nb + p.size].reshape(p.grid)
        if p.observations is None:
            return gap, eq, None
        return gap, eq, r[nb + p.size:] + jnp.asarray(p.observations[1])

    # -- prediction -----------------------------------------------------------------------

    def predict_grid(self, c: Array | Coordinates, axes, orders=None) -> Array:
        """The conditional mean (or its derivative of ``orders`` per axis) on the tensor
        grid spanned by ``axes``; ``c`` may carry leading batch axes."""
        orders = orders or (0,) * self.problem.ndim
        mats = [self.cross(j, x, m) for j, (x, m) in enumerate(zip(axes, orders))]
        return kron.kron_apply(mats, self.weights(c))

    def predict(self, c: Array | Coordinates, points) -> Array:
        """The conditional mean at scattered points, an array of shape (M, d)."""
        points = jnp.asarray(points)
        t = self.weights(c)
        for j in range(self.problem.ndim):
            k = self.cross(j, points[:, j])
            t = k @ t if j == 0 else jnp.einsum("mi,mi...->m...", k, t)
        return t

    def gauss_newton(self, u: Array, basis=None) -> "gauss_newton.GaussNewton":
        """The Gauss-Newton operator of minus the log joint, linearised at grid values u
        (``basis``: its ``gauss_newton.RotatedBasis``, if computed for this kernel)."""
        return gauss_newton.GaussNewton(self, u, basis)

