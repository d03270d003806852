"""Starting points for MAP: the paper's, or frequencies read off the data's spectrum (the
source and the boundary values, never the exact solution).
"""

import jax.numpy as jnp
import numpy as np

from gpbayes import kernels
from gpbayes.infer.learn import bounds
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
    """
    n = problem.grid[j]
    h = problem.axes[j][1] - problem.axes[j][0]
    freqs = np.fft.rfftfreq(PAD * n, h)
    order = problem.axis_order(j)
    symbol = np.maximum(2 * np.pi * freqs, 2 * np.pi * freqs[PAD]) ** order
    arrays = [(np.asarray(problem.source_values), j, symbol)]
    for face, values in problem.boundary_arrays():
        if face.axis != j:  # a face spans every axis but its own
            arrays.append((values, j if j < face.axis else j - 1, 1.0))
    data, solution = np.zeros_like(freqs), np.zeros_like(freqs)
    win = window(n)
    for a, axis, scale in arrays:
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
    on [0, 2], boundary data up to 28, error 1.0 from every start)."""
    params = initial_params(problem)
    g = np.asarray(problem.boundary_values)
    variance = max(float(np.mean(g**2)) if g.size else 0.0, 1.0)
    v = problem.variables[0]
    params[f"log_w_{v}"] = params[f"log_w_{v}"] + np.log(variance)
    return params


def spectral_params(problem, rho_scale: float = 0.3) -> dict:
    """The paper's start (variance from ``scaled_params``) with mu on the data's spectral
    peaks and long length scales."""
    params = scaled_params(problem)
    if not kernels.has_frequencies(problem.family):
        return params
    q = problem.components
    for j, v in enumerate(problem.variables):
        freqs, amp, amp_u = axis_spectrum(problem, j)
        peaks = peak_frequencies(freqs, amp, max(1, q // 3))
        chosen = [f for f in peaks if f > 0]
        if np.max(amp_u[: 2 * PAD]) > LOW_FREQUENCY:  # the solution has a smooth part
            chosen.append(0.0)
        # fill with the strongest remaining frequencies of the unpadded FFT grid
        for i in np.argsort(amp[::PAD])[::-1]:
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


PLAIN_COMPONENTS = 4  # components of a plain-family candidate, at length scales a decade apart


def plain_params(problem) -> dict:
    """A start for a plain family (no frequencies): PLAIN_COMPONENTS envelopes whose length
    scales span the learnable box (``learn.bounds``) log-evenly, equal weights (variance
    from ``scaled_params``)."""
    params = scaled_params(problem)
    q = problem.components
    for v in problem.variables:
        lo, hi = bounds(problem)[f"log_rho_{v}"]
        params[f"log_rho_{v}"] = jnp.asarray(np.linspace(lo, hi, q + 2)[1:-1])
    return params
