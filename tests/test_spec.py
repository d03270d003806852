from dataclasses import replace

import numpy as np
import pytest

import gpbayes as gb
from gpbayes.spec import estimate_bytes, map_recipe_of

CASES = {  # id: (grid, F, boundary weight, domain hi) from ../shared/paper-targets.md
    "poisson1d-sin100": ([400], 20, 200, 2 * np.pi),
    "poisson1d-sin6cos100": ([400], 20, 200, 2 * np.pi),
    "poisson1d-xsin200": ([900], 50, 200, 2 * np.pi),
    "poisson1d-multiscale": ([900], 30, 200, 1.0),
    "poisson1d-sin500": ([400], 100, 200, 1.0),
    "allencahn1d-sin100": ([400], 20, 200, 2 * np.pi),
    "allencahn1d-sin6cos100": ([400], 20, 200, 2 * np.pi),
    "poisson2d-sin100": ([400, 400], 20, 200, 2 * np.pi),
    "poisson2d-sin6cos20": ([200, 200], 20, 200, 2 * np.pi),
    "allencahn2d-multiscale": ([400, 400], 30, 200, 1.0),
    "advection-beta200": ([200, 200], 40, 500, 1.0),
}


CONDITION_MODELS = ("heat1d-neumann", "poisson2d-mixed", "poisson1d-robin",
                    "advection-periodic", "wave1d")  # issue 15's conditions


def test_every_paper_case_has_a_model_file(root):
    assert sorted(p.stem for p in (root / "models").glob("*.toml")) == sorted(
        list(CASES) + list(CONDITION_MODELS))


@pytest.mark.parametrize("case", CONDITION_MODELS)
def test_condition_models_are_consistent(root, case):
    """The models with Neumann, Robin, periodic and velocity conditions load, and their
    exact solutions satisfy the equation with the given source."""
    p = gb.load_model(root / "models" / f"{case}.toml")
    assert p.name == case and any(not c.dirichlet for c in p.conditions)
    if p.source is not None:
        np.testing.assert_allclose(p.equation_of_solution(p.axes), p.source_values,
                                   atol=1e-8 * max(1.0, np.abs(p.source_values).max()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_file_is_faithful(root, case):
    grid, fmax, weight, hi = CASES[case]
    p = gb.load_model(root / "models" / f"{case}.toml")
    assert p.name == case and list(p.grid) == grid
    assert p.max_frequency == fmax and p.boundary_weight == weight
    assert p.components == 30 and p.family == "student-t-mixture"
    assert all(lo == 0.0 and h == pytest.approx(hi) for lo, h in p.domain)
    assert list(p.test_grid) == [300] * len(grid)
    assert len(p.faces) == 2 * len(grid)
    # The exact solution satisfies the equation with the source derived from it.
    assert np.all(np.isfinite(p.source_values))


def test_advection_source_is_zero_and_solution_consistent(root):
    p = gb.load_model(root / "models/advection-beta200.toml")
    assert np.all(p.source_values == 0)
    np.testing.assert_allclose(p.equation_of_solution(p.axes), 0, atol=1e-9)


def test_recipes_load(root):
    adam = gb.load_inference(root / "inference/map-adam.toml")
    assert (adam.optimizer, adam.learning_rate, adam.steps, adam.jitter) == ("adam", 0.01,
                                                                            100000, 1e-6)
    default = gb.load_inference(root / "inference/map.toml")
    assert (default.optimizer, default.init) == ("auto", "spectrum")
    assert gb.load_inference(root / "inference/map.toml", steps=7).steps == 7
    for name in ("nuts", "gaussian"):  # sampling starts from a MAP at the paper's jitter,
        recipe = gb.load_inference(root / f"inference/{name}.toml")  # tau_e held out
        assert recipe.map_jitter == 1e-6 and recipe.calibrate_tau_e
        start = map_recipe_of(recipe)
        assert (start.method, start.jitter, start.plain_jitter, start.calibrate_tau_e) == (
            "map", 1e-6, 1e-6, True)
        assert start.source == str(root / "inference/map.toml")
    assert not default.calibrate_tau_e


def test_a_recipe_extends_another_with_its_own_keys_over_it(root, tmp_path):
    precise = gb.load_inference("precise")
    assert precise == replace(gb.load_inference("map"), cg_max_iterations=20000,
                              description=precise.description, source=precise.source)
    (tmp_path / "base.toml").write_text('extends = "map"\nsweeps = 3\n')
    (tmp_path / "mine.toml").write_text('extends = "base.toml"\nsweeps = 4\njitter = 1e-9\n')
    mine = gb.load_inference(tmp_path / "mine.toml")
    assert (mine.sweeps, mine.jitter, mine.screen_sweeps) == (4, 1e-9, 2)  # the last from map


def test_packaged_recipes_are_the_documented_copies(root):
    """The package ships the recipes (gpbayes solve does the same from any folder); the
    files in inference/ are their documented copies, byte for byte."""
    from gpbayes.spec import PACKAGED, RECIPES

    copies = sorted(f.name for f in (root / "inference").glob("*.toml"))
    assert copies == sorted(f"{name}.toml" for name in PACKAGED)
    for name in copies:
        assert (RECIPES / name).read_bytes() == (root / "inference" / name).read_bytes(), name
    by_name = gb.load_inference("map")
    assert by_name.source == str(RECIPES / "map.toml")
    assert by_name == gb.load_inference(RECIPES / "map.toml")
    assert gb.load_inference().source == ""


def test_recipe_defaults_are_the_packaged_map_recipe():
    """``Recipe()`` (and ``load_inference()``) is map.toml, the default of ``gpbayes
    solve``, apart from the text fields; map-adam.toml states the whole paper protocol."""
    from dataclasses import replace

    packaged = gb.load_inference("map")
    assert replace(packaged, description="", source="") == gb.Recipe() == gb.load_inference()
    adam = gb.load_inference("map-adam")
    assert (adam.optimizer, adam.init, adam.jitter, adam.steps) == ("adam", "paper", 1e-6, 100_000)


def test_the_method_picks_the_recipe_kind(tmp_path):
    """A sampling recipe is a SampleRecipe whatever its sampler, with the Gaussian
    posterior's CG settings as its defaults; a file without ``method`` read for a sampler
    (``gpbayes sample --method gaussian``) is one too, not a map recipe."""
    gauss = gb.load_inference(method="gaussian")
    assert isinstance(gauss, gb.SampleRecipe) and gauss == gb.SampleRecipe(method="gaussian")
    assert (gauss.cg_tolerance, gauss.cg_max_iterations) == (1e-10, 20000)
    assert gb.load_inference("gaussian").cg_max_iterations == 20000
    assert isinstance(gb.load_inference("nuts"), gb.SampleRecipe)
    bare = write(tmp_path, "chains = 1\nsolver = \"dense\"\n", "post.toml")
    both = [gb.load_inference(bare, method=m) for m in ("nuts", "gaussian")]
    assert [(r.method, r.chains, r.solver, r.cg_max_iterations) for r in both] == [
        ("nuts", 1, "dense", 20000), ("gaussian", 1, "dense", 20000)]
    with pytest.raises(gb.SpecError, match="chains: is a key of sampling"):
        gb.load_inference(bare)  # no method: a map recipe


def write(tmp_path, text, name="m.toml"):
    f = tmp_path / name
    f.write_text(text)
    return f


GOOD = """
[pde]
variables = ["x"]
domain = [[0, 1]]
equation = "u_xx"
solution = "sin(x)"
[grid]
points = [20]
"""


@pytest.mark.parametrize("edit, key, fragment", [
    (("[grid]", "[gird]"), "gird", "unknown key (did you mean 'grid'?)"),
    (("points = [20]", "points = [2]"), "grid.points", "at least 3 points"),
    (("points = [20]", "points = [200000000]"), "grid.points", "GiB"),
    (("[[0, 1]]", "[[1, 0]]"), "pde.domain[0]", "lo must be below hi"),
    (('"sin(x)"', '"sin(z)"'), "pde.solution", "unknown name 'z'"),
    (('equation = "u_xx"\n', ""), "pde.equation", "is required"),
    (('"sin(x)"', '"log(x - 2)"'), "pde.solution", "NaN or infinity"),
    (("[grid]", '[kernel]\nfamily = "studnet-t-mixture"\n[grid]'), "kernel.family",
     "did you mean 'student-t-mixture'"),
    (("points = [20]", 'points = "20"'), "grid.points", "expected list"),
])
def test_bad_model_files(tmp_path, edit, key, fragment):
    f = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(gb.SpecError) as err:
        gb.load_model(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: {key}: ") and fragment in msg, msg


def test_malformed_toml(tmp_path):
    f = write(tmp_path, "[pde\n")
    with pytest.raises(gb.SpecError, match="malformed TOML"):
        gb.load_model(f)


def test_bad_recipe(tmp_path):
    f = write(tmp_path, 'optimizer = "sgd"\n', "r.toml")
    with pytest.raises(gb.SpecError, match="r.toml: optimizer: unknown optimizer"):
        gb.load_inference(f)
    f = write(tmp_path, "learning_rat = 0.1\n", "r.toml")
    with pytest.raises(gb.SpecError, match="did you mean 'learning_rate'"):
        gb.load_inference(f)


def test_memory_estimate_grows_with_grid():
    assert estimate_bytes((400, 400)) < estimate_bytes((800, 800)) < 16 * 2**30


@pytest.mark.parametrize("text, key, fragment", [
    ('init = "fft"\n', "init", "unknown init 'fft'"),
    ("rho_scales = []\n", "rho_scales", "non-empty list"),
    ("rho_scales = [1, -2]\n", "rho_scales", "non-empty list"),
    ("tau_max = 0\n", "tau_max", "> 0"),
    ("tau_b_start = -1.0\n", "tau_b_start", "> 0"),
    ("sweeps = 0\n", "sweeps", ">= 1"),
    ('optimizer = "lbfgs"\n', "optimizer", "unknown optimizer"),
    ('families = ["rbf"]\n', "families", "unknown family 'rbf'"),
    ("learn_iterations = -1\n", "learn_iterations", ">= 0"),
    ("learn_sweeps = 0\n", "learn_sweeps", ">= 1"),
    ("refine_above = -1e-6\n", "refine_above", ">= 0"),
    ('method = "nuts"\nmap_jitter = -1e-6\n', "map_jitter", ">= 0"),
    ('method = "gaussian"\nsolver = "lanczos"\n', "solver", "unknown solver 'lanczos'"),
    ('method = "gaussian"\nsamples = 0\n', "samples", ">= 1"),
    ('method = "nuts"\nchains = 0\n', "chains", ">= 1"),
    ('method = "mcmc"\n', "method", "unknown method 'mcmc' (choose from map, nuts, gaussian)"),
    ("map_jitter = 1e-6\n", "map_jitter", "is a key of sampling (nuts, gaussian) recipes, "
     "not of map ones"),
    ('method = "nuts"\nsweeps = 3\n', "sweeps", "is a key of map recipes, not of nuts ones"),
    ('calibrate_tau_e = "yes"\n', "calibrate_tau_e", "expected bool"),
])
def test_bad_recipe_values(tmp_path, text, key, fragment):
    f = write(tmp_path, text, "r.toml")
    with pytest.raises(gb.SpecError) as err:
        gb.load_inference(f)
    assert str(err.value).startswith(f"{f}: {key}: ") and fragment in str(err.value)
