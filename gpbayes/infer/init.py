"""Starting points for MAP: the paper's, or frequencies read off the data's spectrum (the
source and the boundary values, never the exact solution).
"""

import jax.numpy as jnp
import numpy as np

from gpbayes import kernels
from gpbayes.conditional import coefficients, unknown_values
from gpbayes.infer.learn import MIN_SPACINGS, bounds
from gpbayes.model import initial_params

PAD = 8  # zero-padding factor of the FFT (finer frequency resolution)
FLOOR = 1e-4  # peaks weaker than this fraction of the strongest are ignored
LOW_FREQUENCY = 1e-2  # relative amplitude below 2 bins that adds a zero-frequency component
_BH = (0.35875, 0.48829, 0.14128, 0.01168)  # Blackman-Harris: sidelobes below -92 dB


def window(n: int) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / (n - 1)
    return sum((-1) ** k * a * np.cos(k * t) for k, a in enumerate(_BH))


def axis_spectrum(problem, j: int) -> tuple:
    """Frequencies (cycles per unit) and two amplitude spectra along axis j of the data.

    ``data``: the source and the boundary data, each normalised to a maximum of 1, summed.
    ``solution``: an estimate of the solution's spectrum, the source's divided by
    (2 pi nu)^m (m the equation's derivative order along the axis) plus the boundary data.
    Every condition's data (a flux, a velocity) enters along its face's axes, normalised
    like the rest: its spectrum along the face is the solution's, scaled; periodic
    equalities carry no data.
    """
    n = problem.grid[j]
    h = problem.axes[j][1] - problem.axes[j][0]
    freqs = np.fft.rfftfreq(PAD * n, h)
    order = problem.axis_order(j)
    symbol = np.maximum(2 * np.pi * freqs, 2 * np.pi * freqs[PAD]) ** order
    arrays = [(np.asarray(problem.source_values), j, symbol)]
    for condition, face, values in problem.boundary_arrays():
        if face.axis != j and not condition.periodic:  # a face spans every axis but its own
            arrays.append((values, j if j < face.axis else j - 1, 1.0))
    data, solution = np.zeros_like(freqs), np.zeros_like(freqs)
    win = window(n)
    # data at rounding level (sin(20 pi) on a face) is no data: normalised, it is noise
    level = 1e-12 * max(np.max(np.abs(a), initial=0.0) for a, _, _ in arrays + [(
        np.asarray(problem.boundary_values), 0, 1.0)])
    for a, axis, scale in arrays:
        if np.max(np.abs(a), initial=0.0) <= level:
            continue
        lines = np.moveaxis(a, axis, -1).reshape(-1, n)
        amp = np.abs(np.fft.rfft(lines * win, PAD * n, axis=-1)).mean(axis=0)
        if amp.max() > 0:
            data += amp / amp.max()
            solution += amp / scale / np.max(amp / scale)
    return freqs, _unit(data), _unit(solution)


def _unit(a):
    return a / max(a.max(), 1e-300)


def peak_frequencies(freqs: np.ndarray, amp: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` local maxima of amp, strongest first, above FLOOR.

    Each peak is refined between the bins by a parabola through the log amplitude of the
    peak bin and its two neighbours (the window's main lobe is near Gaussian, so this is
    close to exact for a clean tone, far finer than the bin width).
    """
    inner = (amp[1:-1] > amp[:-2]) & (amp[1:-1] >= amp[2:]) & (amp[1:-1] > FLOOR)
    idx = np.nonzero(inner)[0] + 1
    idx = idx[np.argsort(amp[idx])[::-1]][:count]
    a, b, c = (np.log(amp[i]) for i in (idx - 1, idx, idx + 1))
    curve = a - 2 * b + c
    shift = np.where(curve < 0, 0.5 * (a - c) / np.where(curve < 0, curve, -1.0), 0.0)
    return freqs[idx] + np.clip(shift, -0.5, 0.5) * (freqs[1] - freqs[0])


def scaled_params(problem) -> dict:
    """The paper's start with the kernel's variance raised to the boundary data's mean
    square where that exceeds 1 (on the first axis: the variance is the product over
    axes). A prior far narrower than the solution makes U = 0, the equation ignored, a
    better local optimum of the log joint than the solution (measured: u = e^x x^2 - x
    on [0, 2], boundary data up to 28, error 1.0 from every start). Only the Dirichlet
    data are values of u."""
    params = initial_params(problem)
    g = np.concatenate([np.zeros(0)] + [v.reshape(-1) for c, _, v in problem.boundary_arrays()
                                        if c.dirichlet])
    variance = max(float(np.mean(g**2)) if g.size else 0.0, 1.0)
    v = problem.variables[0]
    params[f"log_w_{v}"] = params[f"log_w_{v}"] + np.log(variance)
    return params


def spectral_params(problem, rho_scale: float = 0.3) -> dict:
    """The paper's start (variance from ``scaled_params``) with mu on the data's spectral
    peaks and long length scales."""
    params = scaled_params(problem)
    if not kernels.family(problem.family).frequencies:
        return params
    q = problem.components
    spectra = [axis_spectrum(problem, j) for j in range(problem.ndim)]
    peaks = [peak_frequencies(freqs, amp, max(1, q // 3)) for freqs, amp, _ in spectra]
    for j, v in enumerate(problem.variables):
        freqs, amp, amp_u = spectra[j]
        chosen = [f for f in peaks[j] if f > 0]
        if not amp.any():  # no data along this axis (an evolution axis): the equation's
            chosen = dispersion_frequencies(problem, j, peaks)[: max(1, q // 3)] + [0.0]
        elif np.max(amp_u[: 2 * PAD]) > LOW_FREQUENCY:  # the solution has a smooth part
            chosen.append(0.0)
        # fill with the strongest remaining frequencies of the unpadded FFT grid
        for i in np.argsort(amp[::PAD])[::-1] if amp.any() else []:
            if len(chosen) >= q:
                break
            f = freqs[::PAD][i]
            if i > 0 and np.min(np.abs(np.asarray(chosen + [0.0]) - f)) > 0.5 * freqs[PAD]:
                chosen.append(f)
        chosen += list(np.linspace(0.0, problem.max_frequency, q - len(chosen)))
        params[f"mu_{v}"] = jnp.asarray(np.asarray(chosen[:q]))
        length = problem.domain[j][1] - problem.domain[j][0]
        params[f"log_rho_{v}"] = jnp.full(q, np.log(rho_scale / length))
    return params


def symbol_coefficients(problem) -> dict:
    """{derivative name: its mean coefficient over the grid} in the equation linearised at
    u = 0 (the unknowns at their prior's loc): the constant-coefficient part of L."""
    zeros = {n: jnp.zeros(problem.grid) for n in problem.derivatives}
    unknowns = unknown_values(problem, initial_params(problem))
    return {n: float(jnp.mean(c)) for n, c in coefficients(problem, unknowns, zeros).items()}


def dispersion_frequencies(problem, j: int, peaks: list) -> list:
    """Frequencies along axis j (cycles per unit) of the plane waves the equation admits
    with the other axes' spectral peaks (one axis at a time): the real roots nu of the
    symbol sum_o c_o prod_i (2 pi i nu_i)^(m_i) = 0. For u_t + c u_x = 0 and
    u_tt = c^2 u_xx, nu_t = c nu_x; for u_t = nu u_xx none (the roots are imaginary: the
    solution decays along t). Used on axes without data (the source and the faces that
    span the axis carry none), where the data's spectrum says nothing."""
    coef = symbol_coefficients(problem)
    out = []
    for i, axis_peaks in enumerate(peaks):
        if i == j:
            continue
        for nu in axis_peaks:
            poly = np.zeros(3, complex)  # powers 0, 1, 2 of (2 pi i nu_j)
            for name, orders in problem.derivatives.items():
                if all(m == 0 for a, m in enumerate(orders) if a not in (i, j)):
                    poly[orders[j]] += coef[name] * (2j * np.pi * nu) ** orders[i]
            roots = np.roots(np.trim_zeros(poly[::-1], "f")) if np.any(poly[1:]) else []
            for r in roots:  # r = 2 pi i nu_j
                f = abs(r.imag) / (2 * np.pi)
                if f > 0 and abs(r.real) <= 1e-6 * abs(r) and not np.any(np.isclose(out, f)):
                    out.append(float(f))
    return out


PLAIN_COMPONENTS = 4  # components of the spread plain start, lengths spanning the box


def plain_lengths(problem) -> list:
    """Length scales, as fractions of each axis, of the plain-family starts: halvings from
    the longest SE length of the learnable box (``kernels.MAX_SE_LENGTH``) while every axis
    keeps at least 2 MIN_SPACINGS grid spacings. Smooth solutions want one long envelope:
    the equal-weight spread of PLAIN_COMPONENTS lengths alone left the smooth suite
    cases 10-100x less accurate, its log joint ~1e5 lower (benchmarks/journal.md)."""
    spacing = max(1.0 / (n - 1) for n in problem.domain_grid)
    out, f = [], kernels.MAX_SE_LENGTH
    while f >= 2 * MIN_SPACINGS * spacing:
        out.append(f)
        f /= 2
    return out


def plain_params(problem, length: float | None = None) -> dict:
    """A start for a plain family (no frequencies): with ``length``, one envelope of that
    length (a fraction of each axis; ``problem`` has one component); else the problem's
    components with length scales spanning the learnable box (``learn.bounds``)
    log-evenly, equal weights (variance from ``scaled_params``)."""
    params = scaled_params(problem)
    q = problem.components
    fam = kernels.family(problem.family)
    for j, v in enumerate(problem.variables):
        lo, hi = bounds(problem)[f"log_rho_{v}"]
        if length is None:
            params[f"log_rho_{v}"] = jnp.asarray(np.linspace(lo, hi, q + 2)[1:-1])
        else:
            a, b = problem.domain[j]
            rho = fam.log_rho(length * (b - a))
            params[f"log_rho_{v}"] = jnp.full(q, np.clip(rho, lo, hi))
    return params
