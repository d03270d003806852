import json
import subprocess
import sys

import pytest

from gpbayes.cli import main
from gpbayes.results import import_arviz


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gpbayes.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    assert "solve" in capsys.readouterr().out


@pytest.mark.slow
def test_solve_end_to_end(root, tmp_path):
    out = tmp_path / "run"
    r = run("solve", str(root / "models/poisson1d-sin100.toml"), "--inference",
            str(root / "inference/map-adam.toml"), "--steps", "100", "--out", str(out), "--json",
            cwd=root)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["steps"] == 100 and abs(summary["rel_l2_error"] - 0.262389) < 5e-4
    assert json.loads((out / "summary.json").read_text()) == summary
    for name in ("solution.png", "error.png", "spectrum.png"):
        assert (out / name).stat().st_size > 1000
    idata = import_arviz().from_netcdf(str(out / "result.nc"))
    assert idata.posterior["u_test"].shape == (1, 1, 300)
    assert "Traceback" not in r.stderr


def test_bad_model_exits_2_without_output(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pde]\nvariables = ["x"]\ndomain = [[0, 1]]\nequation = "u_xx + y"\n'
                   'solution = "x"\n[grid]\npoints = [10]\n')
    out = tmp_path / "out"
    r = run("solve", str(bad), "--out", str(out))
    assert r.returncode == 2
    assert r.stderr.strip() == (f"gpbayes: error: {bad}: pde.equation: unknown name 'y' in "
                                "'u_xx + y'")
    assert not out.exists()


def test_missing_file_exits_2(tmp_path):
    r = run("solve", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "cannot read file" in r.stderr and "Traceback" not in r.stderr


def test_bench_writes_table(root, tmp_path):
    model = tmp_path / "tiny.toml"
    model.write_text('name = "tiny"\n[pde]\nvariables = ["x"]\ndomain = [[0, 2]]\n'
                     'equation = "u_xx"\nsolution = "sin(3*x)"\n[grid]\npoints = [40]\n'
                     '[kernel]\ncomponents = 4\nmax_frequency = 2\n')
    out = tmp_path / "bench"
    r = run("bench", str(model), "--inference", str(root / "inference/map.toml"), "--out",
            str(out), cwd=root)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "bench.json").read_text())
    assert rows[0]["name"] == "tiny" and rows[0]["rel_l2_error"] < 0.1
    assert rows[0]["paper_error"] is None and rows[0]["meets_paper"] is None
    header = (out / "bench.csv").read_text().splitlines()[0]
    assert header.startswith("name,rel_l2_error,paper_error")
    assert "tiny" in r.stdout
