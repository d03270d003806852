import os
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gpbayes as gb  # noqa: E402
from gpbayes import threads  # noqa: E402
from gpbayes.stops import Stop  # noqa: E402

# the command line's BLAS setting, so in-process fits equal the CLI's bit for bit
threads.limit_blas_threads()

ROOT = Path(__file__).resolve().parents[1]


PLAIN_PROFILE = dict(rho_scales=[0.3, 0.1, 1.0, 3.0], tau_b_start=1.0, gauss_newton_steps=3,
                     learn_iterations=0, refine_above=0.0, learn_max_points=10**9,
                     families=[], screen_sweeps=0, cg_tolerance=1e-10,
                     cg_max_iterations=20000)


def paper_recipe(**overrides):
    """The recipe the tests were written against: map-adam.toml (the paper's Adam
    protocol, jitter 1e-6) with the profile solver's plain settings (one start per rho
    scale, no race, no learning, each CG solve to 1e-10). ``Recipe()`` is map.toml."""
    return gb.load_inference("map-adam", **{**PLAIN_PROFILE, **overrides})


@pytest.fixture(scope="session")
def root():
    return ROOT


def small_problem(n=40, equation="u_xx", solution="sin(3*x)", **kw):
    """A quick 1-D problem on [0, 2]."""
    from gpbayes import operators as op
    from gpbayes.problem import Face

    v = ("x",)
    args = dict(name="small", variables=v, domain=[(0.0, 2.0)], grid=(n,), test_grid=(50,),
                equation=op.parse(equation, set(v), allow_u=True, variables=v),
                solution=op.parse(solution, set(v)), faces=(Face(0, "lo"), Face(0, "hi")),
                components=4, max_frequency=2.0, boundary_weight=10.0)
    args.update(kw)
    return gb.Problem(**args)


def small_2d_problem(n=12, equation="u_xx + u_yy", solution="sin(3*x)*sin(2*y)", **kw):
    """A 2-D problem on [0, 1]^2 with noisy-data likelihoods (fixed precisions) and the
    spectral start as its hyperparameters: returns (problem, MapFit at those values)."""
    from gpbayes import operators as op
    from gpbayes.infer.init import spectral_params
    from gpbayes.problem import Face
    from gpbayes.results import MapFit

    v = ("x", "y")
    args = dict(name="small2d", variables=v, domain=[(0.0, 1.0)] * 2, grid=(n, n),
                test_grid=(9, 9),
                equation=op.parse(equation, set(v) | set(kw.get("unknowns", {})), allow_u=True,
                                  variables=v),
                solution=op.parse(solution, set(v)),
                faces=tuple(Face(a, s) for a in (0, 1) for s in ("lo", "hi")),
                components=4, max_frequency=2.0, boundary_noise=0.01, equation_noise=1.0)
    args.update(kw)
    p = gb.Problem(**args)
    params = spectral_params(p)
    return p, MapFit(p, params, paper_recipe(), 0, 0.0, Stop.CONVERGED, False)


def small_3d_problem(grid=(12, 12, 12), components=3, max_frequency=2.0, test=7):
    """The Laplacian u_xx + u_yy + u_zz = f on [0, 1]^3 with Dirichlet data on the six
    faces, u = sin(3x) sin(2y) cos(z)."""
    from gpbayes import operators as op
    from gpbayes.problem import Face

    v = ("x", "y", "z")
    return gb.Problem(name="p3d", variables=v, domain=[(0.0, 1.0)] * 3, grid=tuple(grid),
                      test_grid=(test,) * 3,
                      equation=op.parse("u_xx + u_yy + u_zz", set(v), allow_u=True,
                                        variables=v),
                      solution=op.parse("sin(3*x)*sin(2*y)*cos(z)", set(v)),
                      faces=tuple(Face(a, s) for a in range(3) for s in ("lo", "hi")),
                      components=components, max_frequency=max_frequency,
                      boundary_weight=10.0)


def small_inverse_problem(n=10):
    """``small_2d_problem`` with an unknown c in u_xx + c u_yy = f (truth 2, prior
    Normal(1, 2)) and 12 observations of u (noise 0.01); its MapFit holds c = 2 and U at
    the exact solution on the grid."""
    import jax.numpy as jnp
    import numpy as np

    from gpbayes import operators as op

    rng = np.random.default_rng(1)
    points = rng.uniform(0.1, 0.9, (12, 2))
    values = np.sin(3 * points[:, 0]) * np.sin(2 * points[:, 1]) + 0.01 * rng.normal(size=12)
    p, fit = small_2d_problem(
        n=n, equation="u_xx + c*u_yy", unknowns={"c": ("normal", 1.0, 2.0)},
        source=op.parse("-(9 + 2*4)*sin(3*x)*sin(2*y)", {"x", "y"}),
        observations=(points, values, 0.01))
    x, y = p.axes
    fit.params["c"] = jnp.asarray(2.0)
    fit.params["U"] = jnp.asarray(np.sin(3 * x)[:, None] * np.sin(2 * y)[None, :])
    return p, fit


def inverse_model(folder, ndim=1, n=60):
    """An inverse problem (unknown k, noisy observations, free precisions): 1-D
    u_xx + k u = f (k = 20), or 2-D u_t + k u_x = 0 (k = 2), as a model file."""
    rng = np.random.default_rng(0)
    if ndim == 1:
        pts = rng.uniform(0.05, 0.95, (12, 1))
        vals = np.sin(6 * pts[:, 0]) + 0.5 * np.cos(11 * pts[:, 0])
        pde = ('variables = ["x"]\ndomain = [[0, 1]]\nequation = "u_xx + k*u"\n'
               'source = "(20 - 36)*sin(6*x) + 0.5*(20 - 121)*cos(11*x)"\n'
               'solution = "sin(6*x) + 0.5*cos(11*x)"\n[pde.boundary]\nfaces = "all"\n'
               f'[grid]\npoints = [{n}]\n')
        prior = "loc = 10.0, scale = 10.0"
    else:
        pts = np.column_stack([rng.uniform(0.05, 0.95, 30), rng.uniform(0.05, 0.45, 30)])
        vals = np.sin(2 * np.pi * (pts[:, 0] - 2 * pts[:, 1]))
        pde = ('variables = ["x", "t"]\ndomain = [[0, 1], [0, 0.5]]\nequation = "u_t + k*u_x"\n'
               'source = "0"\nsolution = "sin(2*pi*(x - 2*t))"\n[pde.boundary]\n'
               f'faces = ["x_lo", "t_lo"]\n[grid]\npoints = [{n}, {n}]\n')
        prior = "loc = 1.0, scale = 2.0"
    vals = vals + 0.01 * rng.normal(size=len(vals))
    path = folder / f"inverse{ndim}d.toml"
    path.write_text(f'name = "inverse{ndim}d"\n[pde]\n{pde}[kernel]\nfamily = "student-t-mixture"\n'
                    f'components = 6\nmax_frequency = 5\n[[observations]]\n'
                    f'points = {pts.tolist()}\nvalues = {vals.tolist()}\nnoise = 0.01\n'
                    f'[unknowns]\nk = {{ prior = "normal", {prior} }}\n')
    return path


def load_example(root, name, folder="examples"):
    """An example (or, with ``folder="benchmarks"``, a benchmark) script as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, root / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def marginal_moments(fit, site, draws, evidence=True):
    """Mean and sd of an unknown's posterior by quadrature of the marginal model's
    density (``pde_model(..., marginal=True)``, U integrated out) on a grid around
    ``draws``; ``evidence=False``: the joint model's marginal instead (U integrated out
    of the whole model, the source counted as evidence)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from gpbayes.conditional import with_factors
    from gpbayes.model import gaussian_volume, pde_model
    from gpbayes.results import fixed_sites

    held = with_factors(fit.problem, fixed_sites(fit), fit.recipe.jitter)
    rest = fixed_sites(fit, (site,))

    def log_p(v):
        if not evidence:  # the joint's marginal up to a constant
            cond = held.with_values({site: v})
            z, root, r = cond.u_given_rest()
            return gaussian_volume(z, root) - 0.5 * (r @ r + jnp.sum(cond.prior_residual**2))
        return log_density(pde_model, (fit.problem,), {
            "jitter": fit.recipe.jitter, "held": held, "marginal": True}, {**rest, site: v})[0]

    draws = np.asarray(draws).ravel()
    grid = draws.mean() + np.linspace(-10, 10, 401) * draws.std()
    lp = np.asarray(jax.lax.map(jax.jit(log_p), jnp.asarray(grid)))
    w = np.exp(lp - lp.max())
    w /= w.sum()
    mean = np.sum(w * grid)
    return mean, np.sqrt(np.sum(w * (grid - mean) ** 2))
