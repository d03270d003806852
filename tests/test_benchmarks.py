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
