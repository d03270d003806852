"""NUTS on an inverse problem (the example), and the sample command."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import load_example, paper_recipe
from gpbayes.infer import nuts
from gpbayes.io import import_arviz
from gpbayes.stops import Note, describe


def write_gaussian_case(folder):
    """A small noisy model file and a Gaussian-posterior recipe with a quick profile MAP
    (a few hundred Adam steps leave the boundary 9 noise sds off: the MAP would fail its
    trust check and the command exit 3)."""
    model = folder / "m.toml"
    model.write_text('name = "m"\n[pde]\nvariables = ["x"]\ndomain = [[0, 1]]\n'
                     'equation = "u_xx"\nsolution = "sin(3*x)"\n[grid]\npoints = [30]\n'
                     '[kernel]\nfamily = "se"\ncomponents = 2\n'
                     '[likelihood]\nboundary_noise = 0.05\nequation_noise = 1\n')
    (folder / "short.toml").write_text('optimizer = "profile"\ninit = "spectrum"\n')
    recipe = folder / "g.toml"
    recipe.write_text('method = "gaussian"\nmap = "short.toml"\n')
    return model, recipe


def test_draws_at_the_tree_depth_cap_are_reported(monkeypatch):
    """A posterior the mass matrix does not whiten (seen on the 2-D advection problem at
    100²: every draw at 1023 leapfrog steps) is said so in the stop reason; forced here
    by a cap of one step."""
    import sys as _sys

    import numpy as np

    import gpbayes as gb

    _sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_posterior import noisy_problem

    p = noisy_problem(np.random.default_rng(0), n=20)
    fit = gb.fit_map(p, paper_recipe(), steps=300, progress=False)
    free = gb.sample_nuts(p, fit, chains=1, warmup=30, draws=30, progress=False)
    assert Note.TREE_DEPTH not in free.notes
    monkeypatch.setattr(nuts, "TREE_DEPTH", 1)
    capped = gb.sample_nuts(p, fit, chains=1, warmup=30, draws=30, progress=False)
    assert capped.notes == (Note.TREE_DEPTH,) and capped.stop_stats["capped"] == 1.0
    assert "100% of the draws reached the tree-depth cap (1 leapfrog" in capped.stop_reason


@pytest.mark.slow
def test_inverse_problem_recovers_k(root, tmp_path):
    example = load_example(root, "inverse_problem")
    r = example.run(out=str(tmp_path / "inv"), chains=2, draws=500)
    lo, hi = r["interval"]
    assert lo <= example.TRUE_K <= hi
    assert r["r_hat"] < 1.01 and r["divergences"] == 0
    idata = import_arviz().from_netcdf(str(tmp_path / "inv" / "posterior.nc"))
    assert idata.posterior["k"].dims == ("chain", "draw")
    assert idata.posterior["u_test"].dims == ("chain", "draw", "x_test_index")
    assert idata.posterior["x_test"].dims == ("x_test_index",)
    assert (tmp_path / "inv" / "trace.png").stat().st_size > 1000


@pytest.mark.slow
def test_sample_command_gaussian(root, tmp_path):
    model, recipe = write_gaussian_case(tmp_path)
    r = subprocess.run([sys.executable, "-m", "gpbayes.cli", "sample", str(model),
                        "--inference", str(recipe), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == "gaussian" and summary["u_test_sd_max"] > 0
    assert summary["recipe"] == str(recipe) and summary["map_check_passed"] is True
    assert (tmp_path / "out" / "posterior.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("max_iterations, code", [(20000, 3), (2, 1)])
def test_sample_command_gaussian_2d_goes_matrix_free(tmp_path, max_iterations, code):
    """A 70 x 70 grid is past the dense limit: auto picks CG; a CG that cannot finish
    still writes its result, flags it and exits 1. (The 100-step Adam MAP fails its trust
    check: the posterior is written, with a warning, and the command exits 3.)"""

    model = tmp_path / "m.toml"
    model.write_text('name = "m2"\n[pde]\nvariables = ["x", "y"]\n'
                     'domain = [[0, 1], [0, 1]]\nequation = "u_xx + u_yy"\n'
                     'solution = "sin(3*x)*sin(2*y)"\n[grid]\npoints = [70, 70]\n'
                     'test_points = [20, 20]\n[kernel]\nfamily = "se"\ncomponents = 1\n'
                     '[likelihood]\nboundary_noise = 0.01\nequation_noise = 1\n')
    (tmp_path / "short.toml").write_text('extends = "map-adam"\nsteps = 100\n')
    recipe = tmp_path / "g.toml"
    recipe.write_text(f'method = "gaussian"\nmap = "short.toml"\nsamples = 16\n'
                      f'cg_max_iterations = {max_iterations}\n')
    r = subprocess.run([sys.executable, "-m", "gpbayes.cli", "sample", str(model),
                        "--inference", str(recipe), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == code, r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["solver"] == "cg" and summary["samples"] == 16
    assert summary["converged"] == (code == 3) and summary["map_check_passed"] is False
    assert ("cg_max_iterations" in r.stderr) == (code == 1)
    assert "trust check" in r.stderr  # the same MAP in both: the warning comes first
    ds = import_arviz().from_netcdf(str(tmp_path / "out" / "posterior.nc")).posterior_moments
    assert ds["u_test_sd"].dims == ("x_test_index", "y_test_index")
    assert ds.attrs["solver"] == "cg"
    assert (tmp_path / "out" / "posterior.png").stat().st_size > 1000


def test_interrupted_sampling_keeps_the_draws_so_far(tmp_path, monkeypatch):
    import sys as _sys

    import numpy as np

    import gpbayes as gb

    _sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_posterior import noisy_problem

    p = noisy_problem(np.random.default_rng(0), n=30)
    fit = gb.fit_map(p, paper_recipe(), steps=500, progress=False)
    calls = []

    monkeypatch.setattr(nuts, "POLL_SECONDS", 1e6)  # checks only before each run

    def stop_after_one_chunk():  # before the warm-up, the first chunk, the second
        calls.append(1)
        return "SIGINT" if len(calls) > 2 else None

    r = gb.sample_nuts(p, fit, chains=2, warmup=50, draws=200, chunk=40, progress=False,
                       interrupt=stop_after_one_chunk)
    assert r.interrupted and r.u_test.shape[:2] == (2, 40)
    summary, _ = nuts.save(r, tmp_path)
    assert summary["complete"] is False and summary["stop"] == "interrupted"
    assert "interrupted (SIGINT)" in summary["stop_reason"]
    idata = import_arviz().from_netcdf(str(tmp_path / "posterior.nc"))
    assert idata.posterior.sizes["draw"] == 40
    assert "map_log_w_x" in idata.constant_data


@pytest.mark.slow
def test_sample_resume_reuses_the_saved_map(root, tmp_path):
    model, recipe = write_gaussian_case(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gpbayes.cli", "sample", str(model), "--inference", str(recipe)]
    first = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert (out / "map" / "checkpoint.npz").exists()
    before = (out / "summary.json").read_text()
    again = subprocess.run(cmd + ["--resume", str(out)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text()) == json.loads(before)


@pytest.mark.slow
def test_hyperparameters_can_be_sampled(root):
    import sys as _sys

    import numpy as np

    import gpbayes as gb

    _sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_posterior import noisy_problem

    assert gb.load_inference(root / "inference/nuts.toml").sample_hyper is False
    p = noisy_problem(np.random.default_rng(0), n=20)
    fit = gb.fit_map(p, paper_recipe(), steps=1000, progress=False)
    r = gb.sample_nuts(p, fit, chains=1, warmup=150, draws=100, progress=False,
                       sample_hyper=True)
    idata = r.to_arviz()
    assert idata.posterior["log_rho_x"].dims == ("chain", "draw", "component")
    assert "log_tau_e" not in idata.posterior  # fixed by equation_noise in this model
    sd = idata.posterior["log_w_x"].std().item()
    assert sd > 0.1  # the weights really move
    assert np.all(np.isfinite(r.u_test)) and r.u_test.shape == (1, 100, 25)


def test_priors_table_is_read(tmp_path):
    import gpbayes as gb

    f = tmp_path / "m.toml"
    f.write_text('[pde]\nvariables = ["x"]\ndomain = [[0, 1]]\nequation = "u_xx"\n'
                 'solution = "x"\n[grid]\npoints = [10]\n[priors]\nlog_rho = [1, 0.5]\n')
    p = gb.load_model(f)
    assert p.priors["log_rho"] == (1.0, 0.5) and p.priors["log_tau"] == (0.0, 10.0)
    f.write_text(f.read_text().replace("[1, 0.5]", "[1, -1]"))
    with pytest.raises(gb.SpecError, match="priors.log_rho: expected"):
        gb.load_model(f)


def _at_jitter(fit, jitter=1e-6):
    import dataclasses

    return dataclasses.replace(fit, recipe=dataclasses.replace(fit.recipe, jitter=jitter))


@pytest.mark.slow
def test_matrix_free_nuts_matches_the_gaussian_posterior(monkeypatch):
    """Beyond MAX_DENSE grid points NUTS samples in Laplace-scaled coordinates: on a
    linear 2-D problem with noisy data its mean and sd agree with the exact Gaussian
    posterior (dense) within Monte-Carlo error."""
    from conftest import small_2d_problem
    from gpbayes.infer import posterior

    p, fit = small_2d_problem(n=10)
    fit = _at_jitter(fit)
    exact = posterior.gaussian_posterior(p, fit, solver="dense")
    monkeypatch.setattr(nuts, "MAX_DENSE", 50)
    r = nuts.sample_nuts(p, fit, chains=1, warmup=150, draws=300, progress=False)
    assert r.path == "matrix_free" and r.extra["diverging"].sum() == 0
    u = r.samples["U"][0]
    ratio = u.std(0) / exact.sd
    assert 0.9 < ratio.mean() < 1.1 and 0.7 < ratio.min() and ratio.max() < 1.3
    assert np.mean(np.abs(u.mean(0) - exact.mean) / exact.sd) < 0.25
    np.testing.assert_allclose(r.u_test[0].std(0).mean() / exact.test_sd.mean(), 1.0, atol=0.1)


@pytest.mark.slow
def test_each_nuts_path_samples_its_marginal_of_the_unknown(monkeypatch):
    """With an unknown (c in u_xx + c u_yy): the default on a small grid (c alone by NUTS,
    U integrated out, the PDE a constraint), the lattice (the same marginal integrated on
    a lattice, as beyond MARGINAL_MAX points), the lattice on the matrix-free marginal (as
    beyond LAPLACE_MAX points) and the joint path (U and c jointly by NUTS, matrix-free,
    the source counted as evidence: beyond LAPLACE_MAX where the PDE is nonlinear) each
    agree with a quadrature of their marginal of c (at the precisions each held: the
    default settles log tau_e at its marginal maximum); their U draws have the same
    spread."""
    from conftest import marginal_moments, small_inverse_problem
    from gpbayes.infer import marginal as marginal_module

    p, fit = small_inverse_problem()
    fit = _at_jitter(fit)
    marginal = nuts.sample_nuts(p, fit, chains=1, warmup=150, draws=300, progress=False)
    assert marginal.path == "marginal"
    monkeypatch.setattr(marginal_module, "MARGINAL_MAX", 50)
    grid = nuts.sample_nuts(p, fit, chains=1, warmup=150, draws=300, progress=False)
    assert grid.path == "lattice" and grid.stop_stats["marginal"] == "dense"
    monkeypatch.setattr(marginal_module, "LAPLACE_MAX", 50)
    solves = nuts.sample_nuts(p, fit, chains=1, warmup=150, draws=300, progress=False)
    assert solves.path == "lattice" and solves.stop_stats["marginal"] == "matrix-free"
    monkeypatch.setattr(nuts, "MAX_DENSE", 50)
    monkeypatch.setattr(marginal_module, "matrix_free", lambda problem: False)
    free = nuts.sample_nuts(p, fit, chains=1, warmup=150, draws=300, progress=False)
    assert free.path == "matrix_free" and free.extra["diverging"].sum() == 0
    for r, evidence in ((marginal, True), (grid, True), (solves, True), (free, False)):
        c = r.samples["c"][0]
        mean, sd = marginal_moments(r.fit, "c", c, evidence)
        assert abs(c.mean() - mean) < 0.3 * sd and 0.8 < c.std() / sd < 1.25, r.path
    for r in (grid, solves, free):
        ratio = r.samples["U"][0].std(0) / marginal.samples["U"][0].std(0)
        assert 0.8 < ratio.mean() < 1.25, r.path
    u, v = solves.samples["U"][0], grid.samples["U"][0]  # means apart by Monte-Carlo error
    assert np.mean(np.abs(u.mean(0) - v.mean(0)) / v.std(0)) < 0.15


def test_draws_map_on_one_device_per_chain():
    """``gpbayes sample`` sets one CPU device per chain before JAX starts (the chains then
    run in parallel); U's draws are split across those devices and equal ``lax.map``'s.
    In a fresh process: this one's JAX is already running with its devices."""
    script = (
        "import jax, jax.numpy as jnp, numpy as np\n"
        "from gpbayes.threads import cpu_devices\n"
        "assert cpu_devices(4)\n"
        "from gpbayes.infer.nuts import _map_on_devices\n"
        "assert jax.local_device_count() == 4, jax.local_device_count()\n"
        "xs = {'a': jnp.arange(24.0).reshape(8, 3), 'b': jnp.arange(8.0)}\n"
        "f = lambda x: (jnp.linalg.qr(jnp.outer(x['a'], x['a']) + jnp.eye(3))[1], x['b'] ** 2)\n"
        "for ours, plain in zip(_map_on_devices(f, xs), jax.lax.map(f, xs)):\n"
        "    np.testing.assert_allclose(ours, plain, rtol=1e-12)\n"
        "assert not cpu_devices(8)  # too late: kept as it is\n"
        "assert jax.local_device_count() == 4\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_nonlinear_pde_unknown_matches_its_exact_posterior(tmp_path, root, monkeypatch):
    """A PDE nonlinear in U (u_xx + a u (u^2 - 1) = f, 20 noisy observations, 80 points):
    NUTS on a alone, U integrated out by its Laplace approximation at U's mode given the
    PDE, against a's exact posterior (finite differences and quadrature, no GP): the
    mean within 0.3 exact sds, the sd within 20% (the joint model, the source counted
    as evidence, gave sds 140x too narrow on such a problem: issue 39); the same for the
    Gaussian posterior (``marginal_posterior``), whose sd of u matches NUTS's draws, and
    for the lattice (the path beyond MARGINAL_MAX points), whose U draws spread as NUTS's."""
    import importlib.util

    import gpbayes as gb
    from gpbayes.spec import map_recipe_of

    modules = {}
    for name in ("inverse_problems", "posterior_reference"):
        spec = importlib.util.spec_from_file_location(name, root / "benchmarks" / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    path = tmp_path / "nl.toml"
    path.write_text(modules["inverse_problems"].nonlinear(np.random.default_rng(0), n=80))
    p = gb.load_model(path)
    fit = gb.fit_map(p, map_recipe_of(gb.load_inference("nuts")), progress=False)
    r = nuts.sample_nuts(fit.problem, fit, chains=2, warmup=300, draws=600, progress=False)
    assert r.path == "marginal_laplace" and r.extra["diverging"].sum() == 0
    exact = modules["posterior_reference"].reference(p, 4001)
    a = r.samples["a"].ravel()
    assert abs(a.mean() - exact["mean"]) < 0.3 * exact["sd"], (a.mean(), a.std(), exact)
    assert 0.8 < a.std() / exact["sd"] < 1.2, (a.mean(), a.std(), exact)
    # the Gaussian posterior: the Laplace approximation of the same marginal, and U's sd
    # (given a, widened by U's change with a) against the spread of NUTS's U draws
    g = gb.gaussian_posterior(fit.problem, fit)
    assert abs(g.unknowns["a"]["mean"] - exact["mean"]) < 0.3 * exact["sd"], g.unknowns
    assert 0.8 < g.unknowns["a"]["sd"] / exact["sd"] < 1.2, g.unknowns
    ratio = g.test_sd / r.u_test.reshape(-1, *r.u_test.shape[2:]).std(0)
    assert 0.85 < np.median(ratio) < 1.15, np.quantile(ratio, [0.1, 0.5, 0.9])
    from gpbayes.infer import marginal

    monkeypatch.setattr(marginal, "MARGINAL_MAX", 50)
    grid = nuts.sample_nuts(fit.problem, fit, chains=2, draws=250, progress=False)
    a = grid.samples["a"].ravel()
    assert grid.path == "lattice_laplace" and len(a) == 500
    assert abs(a.mean() - exact["mean"]) < 0.3 * exact["sd"], (a.mean(), a.std(), exact)
    assert 0.8 < a.std() / exact["sd"] < 1.2, (a.mean(), a.std(), exact)
    ratio = grid.u_test.reshape(-1, *grid.u_test.shape[2:]).std(0) / g.test_sd
    assert 0.85 < np.median(ratio) < 1.15, np.quantile(ratio, [0.1, 0.5, 0.9])


def test_a_signal_during_the_warm_up_stops_the_sampler_at_once():
    """numpyro's warm-up (and each run) is one compiled loop that no signal stops: it runs
    in a worker thread while the caller checks the interrupt, and the sampler returns as
    soon as the interrupt gives a reason, with no draws and the stop saying why."""
    import time

    class SlowWarmUp:  # an MCMC whose warm-up outlasts the test
        num_warmup = 10

        def warmup(self, *args, **kwargs):
            time.sleep(20)

    start = time.perf_counter()

    def interrupt():
        return "SIGTERM" if time.perf_counter() - start > 0.5 else None

    samples, extra, (code, stats), _ = nuts._run_in_chunks(
        SlowWarmUp(), jax.random.PRNGKey(0), 100, None, interrupt)
    assert time.perf_counter() - start < 5
    assert samples == {} and extra == {} and code == "interrupted"
    assert describe(code, stats) == "interrupted (SIGTERM) before the first draws"
    assert nuts.worker_running()


def test_an_interrupt_stops_the_lattice_before_its_draws(tmp_path, monkeypatch):
    """The lattice path checks the interrupt between its rings and its nodes' U draws: a
    signal during it ends with no draws and says so (summary.json only)."""
    from conftest import small_inverse_problem
    from gpbayes.infer import marginal as marginal_module

    p, fit = small_inverse_problem()
    monkeypatch.setattr(marginal_module, "MARGINAL_MAX", 50)
    calls = []

    def stop_in_the_lattice():  # the mode search's steps, then the lattice's first ring
        calls.append(1)
        return "SIGTERM" if len(calls) > 1 else None

    r = nuts.sample_nuts(p, _at_jitter(fit), chains=2, draws=50, progress=False,
                         interrupt=stop_in_the_lattice)
    assert r.path == "lattice" and r.interrupted and r.u_test.shape[:2] == (2, 0)
    assert "interrupted (SIGTERM) before the first draws" in r.stop_reason
    summary, table = nuts.save(r, tmp_path)
    assert table is None and summary["draws_per_chain"] == 0
    assert not (tmp_path / "posterior.nc").exists()
