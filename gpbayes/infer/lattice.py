"""The unknowns' marginal integrated on a lattice (INLA's grid strategy: Rue, Martino and
Chopin 2009), for grids where NUTS cannot afford the marginal: beyond
``marginal.MARGINAL_MAX`` points one evaluation is a dense QR (1.5 s at 50 x 50 here) and
NUTS needs thousands; a lattice over a few unknowns needs tens.

Quasi-Newton steps from the MAP's values find the marginal's mode (``find_mode``). The
lattice lives in the coordinates that whiten the curvature there (theta = centre + root
@ (STEP_d * index)); it grows outward from the centre, one ring of neighbours at a time,
from every node within DROP of the best log density so far (so it walks on where the
mode was missed), and is rebuilt in its own moments when they show the scale was wrong.
The unknowns' draws take a node by its weight and a uniform offset within its cell; U's
draws come from its Gaussian given the unknowns at the draw's node. Exact where the PDE
is linear in U, up to the lattice's quadrature (its moments) and the cells' width (the
draws' variance: ``draw_theta``).
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from gpbayes import threads
from gpbayes.errors import NumericalError
from gpbayes.infer.marginal import Marginal

STEP = {1: 0.5, 2: 0.75}  # spacing in Laplace sds, by the number of unknowns (else 1.0)
DROP = 8.0  # nodes this far below the best log density are not expanded (e^-8 of its mass)
MAX_NODES = 400  # a lattice that needs more stops and says so
RESCALE = 2.0  # a lattice sd off the Laplace one by more than this factor: built again
PASSES = 3  # lattices built at most
DRAWS = 250  # independent draws per chain at most (worth NUTS's 1000: their ess is their
# number), each with U on the grid and the test grid (100 MB at 50 x 50 for 4 chains)
MODE_STEPS = 20  # quasi-Newton steps to the marginal's mode at most
MODE_TOLERANCE = 0.05  # a step below this many Laplace sds ends them


@dataclass
class Lattice:
    """Evaluated nodes: ``index`` (K, d) integers, ``theta`` (K, d) the unknowns' flat
    values, ``log_density`` (K,) minus the potential; ``centre``, ``root``, ``step`` map
    an index to theta; ``capped``: MAX_NODES stopped the growth."""

    index: np.ndarray
    theta: np.ndarray
    log_density: np.ndarray
    centre: np.ndarray
    root: np.ndarray
    step: float
    capped: bool

    @property
    def weights(self) -> np.ndarray:
        w = np.exp(self.log_density - self.log_density.max())
        return w / w.sum()

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and covariance of theta under the lattice's weights (the trapezoid
        rule on a uniform lattice: accurate far below its spacing for a smooth density)."""
        w = self.weights
        mean = w @ self.theta
        d = self.theta - mean
        return mean, (d * w[:, None]).T @ d


def grow(potential: Callable[[np.ndarray], float], centre: np.ndarray, root: np.ndarray,
         step: float, workers: int = 1, interrupt=None, bar=None) -> Lattice | None:
    """The lattice from ``centre`` (module docstring); ``potential`` of flat theta. None if
    ``interrupt`` gave a reason between rings."""
    d = len(centre)
    values: dict[tuple, float] = {}
    ring, capped = [(0,) * d], False
    with ThreadPoolExecutor(workers) as pool:
        while ring:
            if interrupt and interrupt():
                return None
            thetas = [centre + root @ (step * np.asarray(i, float)) for i in ring]
            for i, v in zip(ring, pool.map(potential, thetas)):
                values[i] = -v if np.isfinite(v) else -np.inf
            if bar is not None:
                bar.update(len(ring))
            best = max(values.values())
            ring = sorted({n for i, v in values.items() if v > best - DROP
                           for n in _neighbours(i) if n not in values})
            if len(values) + len(ring) > MAX_NODES:
                ring, capped = [], bool(ring)
    if not np.isfinite(max(values.values())):
        raise NumericalError(f"the unknowns' marginal is not finite at any of the {len(values)} "
                             f"lattice nodes about {np.round(centre, 6).tolist()} (the MAP in "
                             f"DIR/map is kept)")
    index = np.array(list(values), int)
    return Lattice(index, centre + (step * index) @ root.T,
                   np.array(list(values.values())), centre, root, step, capped)


def _neighbours(i: tuple) -> list[tuple]:
    return [i[:a] + (i[a] + s,) + i[a + 1:] for a in range(len(i)) for s in (-1, 1)]


def build(potential: Callable, centre: np.ndarray, cov: np.ndarray, workers: int = 1,
          interrupt=None, bar=None) -> tuple[Lattice | None, int]:
    """The lattice (``grow``) in the whitening of ``cov`` about ``centre``, built again
    in its own moments while they differ from the Laplace scale by more than RESCALE (at
    most PASSES times). Returns (lattice or None if interrupted, passes)."""
    step, passes = STEP.get(len(centre), 1.0), 0
    while True:
        root, passes = np.linalg.cholesky(cov), passes + 1
        lattice = grow(potential, centre, root, step, workers, interrupt, bar)
        if lattice is None or passes == PASSES:
            return lattice, passes
        mean, new = lattice.moments()  # truncated where capped: the next pass is wider
        ratio = np.linalg.eigvalsh(np.linalg.solve(root, np.linalg.solve(root, new).T))
        if np.all((ratio >= RESCALE**-2) & (ratio <= RESCALE**2)) and not lattice.capped:
            return lattice, passes
        centre, cov = mean, new


def draw_theta(lattice: Lattice, count: int, rng: np.random.Generator) -> tuple:
    """``count`` draws (count, d) of the unknowns: a node by its weight, then a uniform
    offset within its cell. Their mean is the lattice's; their variance exceeds it by
    step^2/12 per whitened axis (sd +1% at STEP 0.5), the price of continuous draws.
    Returns (draws, their nodes)."""
    node = rng.choice(len(lattice.index), size=count, p=lattice.weights)
    x = lattice.index[node] + rng.uniform(-0.5, 0.5, size=(count, lattice.index.shape[1]))
    return lattice.centre + (lattice.step * x) @ lattice.root.T, node


def find_mode(value_and_grad: Callable, x: np.ndarray, hessian: np.ndarray,
              steps: int = MODE_STEPS, interrupt=None) -> tuple[np.ndarray, np.ndarray]:
    """The marginal's mode from the MAP's values ``x``: quasi-Newton steps (BFGS updates
    of the Hessian at the MAP, or the identity where that is not positive definite), each
    halved until the potential falls, until the step is below MODE_TOLERANCE Laplace sds
    (or no halving lowers it: the lattice, which walks, goes on from there).
    Returns (mode, covariance: the updated Hessian's inverse)."""
    h = hessian if np.all(np.linalg.eigvalsh(hessian) > 0) else np.eye(len(x))
    x = np.asarray(x, float)
    value, grad = (np.asarray(a) for a in value_and_grad(jnp.asarray(x)))
    for _ in range(steps):
        if interrupt and interrupt():
            break
        step = -np.linalg.solve(h, grad)
        if float(step @ h @ step) < MODE_TOLERANCE**2:
            break
        t = 1.0
        while True:
            new_value, new_grad = (np.asarray(a) for a in value_and_grad(jnp.asarray(x + t * step)))
            if new_value <= value or t < 1e-3:
                break
            t /= 2
        if not new_value <= value:  # no fall along the step: the lattice searches from here
            break
        s, y = t * step, new_grad - grad
        if s @ y > 0:  # BFGS: keeps h positive definite
            hs = h @ s
            h = h - np.outer(hs, hs) / (s @ hs) + np.outer(y, y) / (s @ y)
        x, value, grad = x + s, new_value, new_grad
    return x, np.linalg.inv(h)


DIFFERENCE = 0.1  # the step of ``differences``, in Laplace sds


def differences(f: Callable[[np.ndarray], float], sd: np.ndarray) -> Callable:
    """x -> (f(x), its gradient by central differences of DIFFERENCE sd per axis)."""
    def value_and_grad(x):
        x = np.asarray(x, float)
        grad = np.zeros_like(x)
        for i, h in enumerate(DIFFERENCE * sd):
            e = np.zeros_like(x)
            e[i] = h
            grad[i] = (f(x + e) - f(x - e)) / (2 * h)
        return f(x), grad

    return value_and_grad


def curvature(f: Callable[[np.ndarray], float], x: np.ndarray, rounds: int = 2) -> np.ndarray:
    """The Hessian of f at x by central second differences: steps of 1e-3 (1 + |x|), then
    half the sds that gives (the lattice's spacing, where the values vary by about 1/8)."""
    d, h = len(x), 1e-3 * (1 + np.abs(x))
    for _ in range(rounds):
        f0, hess = f(x), np.zeros((d, d))
        for i in range(d):
            for j in range(i, d):
                ei, ej = np.eye(d)[i] * h[i], np.eye(d)[j] * h[j]
                if i == j:
                    hess[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / h[i] ** 2
                else:
                    hess[i, j] = hess[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej)
                                               + f(x - ei - ej)) / (4 * h[i] * h[j])
        h = 0.5 * _sd(hess, h)
    return hess


def _sd(hessian: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The Laplace sds of a Hessian, ``fallback`` where it is not positive definite."""
    if not np.all(np.linalg.eigvalsh(hessian) > 0):
        return fallback
    return np.sqrt(np.diag(np.linalg.inv(hessian)))


def mode(m: Marginal, interrupt=None, phases: dict | None = None) -> tuple:
    """The marginal's mode from the MAP's values (``find_mode``) and the covariance there:
    from autodiff's Hessian (dense), or from differences of values whose solves start at
    the MAP's (matrix-free: ``curvature``, ``differences``). ``phases`` gets the seconds of
    "hessian" and "mode"."""
    start, phases = time.perf_counter(), {} if phases is None else phases
    flat, unravel = ravel_pytree(m.theta)
    if m.u_map is None:
        hessian = np.asarray(m.laplace(steps=0)[1])
        f = jax.jit(lambda x: m.potential(unravel(x)))
        value_and_grad = jax.jit(jax.value_and_grad(f))
    else:
        near = m.near(flat)
        hessian = curvature(near, flat)
        value_and_grad = differences(near, _sd(hessian, np.ones_like(flat)))
    phases["hessian"] = time.perf_counter() - start
    out = find_mode(value_and_grad, flat, hessian, interrupt=interrupt)
    phases["mode"] = time.perf_counter() - start - phases["hessian"]
    return out


def sample(m: Marginal, chains: int, draws: int, seed: int, progress: bool = False,
           interrupt=None) -> dict:
    """Draws of the unknowns (by site) and of U from the marginal ``m`` on a lattice:
    {"samples": {site: (chains, draws)}, "U": (chains, draws, *grid), "u_test": ...,
    "lattice": Lattice, "passes", "wall_time_s"}; "lattice" None when interrupted."""
    start = time.perf_counter()
    problem = m.problem
    phases = {}
    centre, cov = mode(m, interrupt, phases)
    workers = threads.start_workers()
    with tqdm(disable=not progress, desc="lattice", unit="node") as bar:
        lattice, passes = build(m.near(centre), centre, cov, workers, interrupt, bar)
    phases["lattice"] = time.perf_counter() - start - sum(phases.values())
    stopped = {"lattice": None, "passes": passes}  # an interrupt, before the draws
    if lattice is None:
        return {**stopped, "wall_time_s": time.perf_counter() - start}
    rng = np.random.default_rng(seed)
    theta, node = draw_theta(lattice, chains * draws, rng)
    drawn = m.u_draws(lattice.theta, node, int(rng.integers(2**31)), workers, interrupt)
    if drawn is None:
        return {**stopped, "wall_time_s": time.perf_counter() - start}
    u, u_test = drawn
    phases["u_draws"] = time.perf_counter() - start - sum(phases.values())
    shape = (chains, draws)
    return {"samples": {site: theta[:, j].reshape(shape)
                        for j, site in enumerate(m.theta)},
            "U": u.reshape(shape + problem.grid),
            "u_test": u_test.reshape(shape + problem.test_grid),
            "lattice": lattice, "passes": passes, "phases": phases,
            "wall_time_s": time.perf_counter() - start}
