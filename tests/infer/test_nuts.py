"""NUTS on an inverse problem (the example), and the sample command."""

import importlib.util
import json
import subprocess
import sys

import pytest

from gpbayes.results import import_arviz


def load_example(root, name):
    spec = importlib.util.spec_from_file_location(name, root / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_inverse_problem_recovers_k(root, tmp_path):
    example = load_example(root, "inverse_problem")
    r = example.run(out=str(tmp_path / "inv"), chains=2, draws=500)
    lo, hi = r["interval"]
    assert lo <= example.TRUE_K <= hi
    assert r["r_hat"] < 1.01 and r["divergences"] == 0
    idata = import_arviz().from_netcdf(str(tmp_path / "inv" / "posterior.nc"))
    assert idata.posterior["k"].dims == ("chain", "draw")
    assert idata.posterior["u_test"].dims == ("chain", "draw", "x_test")
    assert (tmp_path / "inv" / "trace.png").stat().st_size > 1000


@pytest.mark.slow
def test_sample_command_gaussian(root, tmp_path):
    model = tmp_path / "m.toml"
    model.write_text('name = "m"\n[pde]\nvariables = ["x"]\ndomain = [[0, 1]]\n'
                     'equation = "u_xx"\nsolution = "sin(3*x)"\n[grid]\npoints = [30]\n'
                     '[kernel]\nfamily = "se"\ncomponents = 2\n'
                     '[likelihood]\nboundary_noise = 0.05\nequation_noise = 1\n')
    recipe = tmp_path / "g.toml"
    recipe.write_text(f'method = "gaussian"\nmap = "{root / "inference/map-adam.toml"}"\n')
    r = subprocess.run([sys.executable, "-m", "gpbayes.cli", "sample", str(model),
                        "--inference", str(recipe), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == "gaussian" and summary["u_test_sd_max"] > 0
    assert (tmp_path / "out" / "posterior.png").exists()
