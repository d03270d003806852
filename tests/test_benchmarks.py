"""The benchmark scripts import in a fresh interpreter (they run only as scripts, so
nothing else would notice a broken import: benchmarks/nuts.py once could not find its
test problems' conftest, which pytest's own process always has)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))
LOAD = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("benchmark", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # defines its functions; main() runs only as a script
assert callable(module.main)
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_script_imports(script):
    r = subprocess.run([sys.executable, "-c", LOAD, str(script)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_posterior_reference_solves_the_model_file_and_integrates():
    """The reference's finite-difference solve reproduces the model file's solution at the
    true k, and the quadrature's sd is near the Fisher width (the posterior is near
    Gaussian here, the prior N(10, 10^2) weak)."""
    import importlib.util

    import numpy as np

    import gpbayes as gb

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("reference",
                                                  root / "benchmarks/posterior_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    p = gb.load_model(root / "benchmarks/problems/inverse-helmholtz1d.toml")
    x = np.linspace(0.0, 1.0, 2001)
    u = ref.solve(p, x, {"k": 20.0}, tuple(p.exact((np.array([0.0, 1.0]),))))
    np.testing.assert_allclose(u, p.exact((x,)), atol=2e-5)
    out = ref.reference(p, 2001)
    obs_x, _, noise = p.observations
    eps = 1e-4
    du = (np.interp(obs_x[:, 0], x, ref.solve(p, x, {"k": out["mean"] + eps}, (u[0], u[-1])))
          - np.interp(obs_x[:, 0], x, ref.solve(p, x, {"k": out["mean"] - eps}, (u[0], u[-1]))))
    fisher_sd = noise / np.linalg.norm(du / (2 * eps))
    assert out["sd"] == pytest.approx(fisher_sd, rel=0.05)
    assert out["q05"] < out["mean"] < out["q95"]


@pytest.mark.parametrize("name, unknown, truth", [("inverse-heat2d", "nu", 0.2),
                                                  ("inverse-advection-periodic2d", "c", 2.0)])
def test_posterior_reference_evolves_2d_problems_exactly(name, unknown, truth):
    """The method of lines (Chebyshev with Dirichlet ends, Fourier where x is periodic)
    gives the model file's solution at the true value: the misfit at the observations is
    their noise (the generator's, sd 0.01, seeded), to 1e-9."""
    import importlib.util

    import numpy as np

    import gpbayes as gb

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("reference",
                                                  root / "benchmarks/posterior_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    p = gb.load_model(root / f"benchmarks/problems/{name}.toml")
    points, values, noise = p.observations
    misfit = ref.misfit_evolution(p, unknown, 24)(truth)
    u = values + noise * misfit  # the reference's u at the observations
    solution = np.array([np.ravel(p.exact((np.array([x]), np.array([t]))))[0]
                         for x, t in points])
    np.testing.assert_allclose(u, solution, atol=1e-9)


def test_u_solve_benchmark_solves_both_systems():
    """benchmarks/u_solve.py's two solves give U on the grid (its 100^2 case): each error
    is the solution's, not a coordinate mix-up (its PCG once reported U's rotated
    coordinates s and errors of O(1))."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("u_solve", root / "benchmarks/u_solve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    p, values = bench.setup(str(root / "models/poisson2d-sin6cos20.toml"), (100, 100))
    assert bench.direct(p, values)["error"] < 1e-3
    assert bench.pcg(p, values, 6.0 * 2.302585)["error"] < 1e-3


def _study(monkeypatch):
    """benchmarks/preconditioner_study.py as a module, run from the repository root."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    spec = importlib.util.spec_from_file_location(
        "preconditioner_study", root / "benchmarks/preconditioner_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def test_the_square_system_preconditions_a_small_grid(monkeypatch):
    """benchmarks/preconditioner_study.py --square: on 24^2 (tau_e 1e6), where the prior
    rules no mode, PCG with the square system's preconditioner (two fast-diagonalization
    solves) converges in a fraction of the default's iterations; so the preconditioner
    is S^{-1} W^{-1} S^{-T} in the right coordinates (a transposed or unrotated one does
    not converge faster)."""
    study = _study(monkeypatch)
    default, square = study.square_iterations(study.SIN6COS20, 24, 1e6)
    assert 3 * square < default  # 16 against 87 when written


def test_the_structured_preconditioner_is_exact_where_the_equation_rules(monkeypatch):
    """benchmarks/preconditioner_study.py --structured: on 24^2 every mode is ruled by the
    equation, where P = M (tau_e G + Delta) M + B^T B is H to rounding, so PCG stops
    within a few iterations (a wrong basis, factor or Woodbury term would not), and so
    does the two-level one around it."""
    study = _study(monkeypatch)
    r = study.structured_iterations(study.SIN6COS20, 24, 1e6)
    assert max(r["structured"], r["two-level"]) <= 3 < r["default"] // 10  # 1, 1 and 87
