"""A table of bad inputs: each gives exit code 2, exactly one line on stderr naming the file
and the key, no traceback, and no output folder."""

import pytest

from gpbayes.cli import main

GOOD = """name = "bad"
[pde]
variables = ["x"]
domain = [[0, 1]]
equation = "u_xx"
solution = "sin(x)"
[pde.boundary]
faces = "all"
[grid]
points = [20]
[kernel]
family = "student-t-mixture"
components = 3
[likelihood]
boundary_weight = 200
"""
RECIPE = 'method = "map"\noptimizer = "adam"\nlearning_rate = 0.01\nsteps = 10\n'

# (id, file to edit: model or recipe, (old, new) or full text, expected message after "{f}: ")
ALLOWED = ("(allowed: abs, acos, arccos, arcsin, arctan, asin, atan, cos, cosh, erf, exp, log, "
           "sign, sin, sinh, sqrt, tan, tanh with one argument; min, max with two)")
CASES = [
    ("malformed-toml", "model", "[pde\n",
     "malformed TOML: Expected ']' at the end of a table declaration (at line 1, column 5)"),
    ("unknown-top-key", "model", ("[grid]", "[gird]"), "gird: unknown key (did you mean 'grid'?)"),
    ("unknown-pde-key", "model", ("equation =", "equaton ="),
     "pde.equaton: unknown key (did you mean 'equation'?)"),
    ("unknown-kernel-key", "model", ("components =", "component ="),
     "kernel.component: unknown key (did you mean 'components'?)"),
    ("wrong-type-points", "model", ("points = [20]", 'points = "20"'),
     "grid.points: expected list, got str"),
    ("missing-equation", "model", ('equation = "u_xx"\n', ""), "pde.equation: is required"),
    ("equation-not-text", "model", ('equation = "u_xx"', "equation = [1]"),
     "pde.equation: expected an expression (text or number), got list"),
    ("unknown-name", "model", ('"u_xx"', '"u_xx + y"'),
     "pde.equation: unknown name 'y' in 'u_xx + y'"),
    ("attribute", "model", ('"sin(x)"', '"x.real"'),
     "pde.solution: Attribute is not allowed in 'x.real'"),
    ("subscript", "model", ('"sin(x)"', '"x[0]"'),
     "pde.solution: Subscript is not allowed in 'x[0]'"),
    ("lambda", "model", ('"sin(x)"', '"(lambda: x)()"'),
     "pde.solution: function 'this call' is not allowed " + ALLOWED + " in '(lambda: x)()'"),
    ("call-outside-whitelist", "model", ('"sin(x)"', '"open(x)"'),
     "pde.solution: function 'open' is not allowed " + ALLOWED + " in 'open(x)'"),
    ("huge-exponent", "model", ('"sin(x)"', '"x**100000"'),
     "pde.solution: exponent 100000 is too large (at most 64) in 'x**100000'"),
    ("lo-above-hi", "model", ("[[0, 1]]", "[[1, 0]]"),
     "pde.domain[0]: lo must be below hi (got 1 >= 0)"),
    ("lo-equals-hi", "model", ("[[0, 1]]", "[[1, 1]]"),
     "pde.domain[0]: lo must be below hi (got 1 >= 1)"),
    ("domain-count", "model", ("[[0, 1]]", "[[0, 1], [0, 1]]"),
     "pde.domain: expected 1 intervals [lo, hi], one per variable"),
    ("domain-not-finite", "model", ("[[0, 1]]", '[[0, "1/0"]]'),
     "pde.domain[0]: '1/0' is not a finite number"),
    ("zero-points", "model", ("points = [20]", "points = [0]"),
     "grid.points: each axis needs at least 3 points"),
    ("too-few-points", "model", ("points = [20]", "points = [2]"),
     "grid.points: each axis needs at least 3 points"),
    ("too-many-points", "model", ("points = [20]", "points = [40000000]"),
     "grid.points: grid [40000000] needs about 143051159.4 GiB, more than the 16 GiB allowed"),
    ("zero-condition-noise", "model", ('faces = "all"', 'faces = "all"\nnoise = 0'),
     "pde.boundary.noise: expected a finite number > 0"),
    ("weight-and-noise", "model", ('faces = "all"', 'faces = "all"\nnoise = 0.1\nweight = 3'),
     "pde.boundary.noise: give a weight (tempered) or a noise sd (noisy data), not both"),
    ("negative-ghost-cells", "model", ("points = [20]", "points = [20]\nghost_cells = -1"),
     "grid.ghost_cells: expected a whole number from 0 to 16"),
    ("fractional-ghost-cells", "model", ("points = [20]", "points = [20]\nghost_cells = 1.5"),
     "grid.ghost_cells: expected int, got float"),
    ("nan-source-on-ghost-points", "model",
     GOOD.replace('[pde.boundary]\nfaces = "all"', '[[pde.boundary]]\nfaces = ["x_lo"]\n'
                  'operator = "u_x"\n[[pde.boundary]]\nfaces = ["x_hi"]')
         .replace('solution = "sin(x)"', 'solution = "sin(x)"\nsource = "sqrt(x)"')
         .replace("points = [20]", "points = [20]\nghost_cells = 2"),
     "pde.source: evaluates to NaN or infinity on the grid (with its ghost points, "
     "grid.ghost_cells)"),
    ("nan-source", "model", ('solution = "sin(x)"', 'solution = "sin(x)"\nsource = "log(x - 5)"'),
     "pde.source: evaluates to NaN or infinity on the grid"),
    ("inf-solution", "model", ('"sin(x)"', '"1/x"'),
     "pde.solution: evaluates to NaN or infinity on the grid"),
    ("nan-boundary", "model", ('faces = "all"', 'faces = "all"\nvalue = "sqrt(x - 3)"'),
     "pde.boundary.value: evaluates to NaN or infinity on the grid"),
    ("unknown-family", "model", ('"student-t-mixture"', '"student-t"'),
     "kernel.family: unknown family 'student-t' (did you mean 'student-t-mixture'? choose from "
     "student-t-mixture, gaussian-mixture, matern52, se)"),
    ("zero-components", "model", ("components = 3", "components = 0"),
     "kernel.components: expected 1 to 1000 components"),
    ("negative-weight", "model", ("boundary_weight = 200", "boundary_weight = -1"),
     "likelihood.boundary_weight: expected a finite number > 0"),
    ("unknown-face", "model", ('faces = "all"', 'faces = ["z_lo"]'),
     "pde.boundary.faces: unknown face 'z_lo' (faces are <variable>_lo or <variable>_hi)"),
    ("nonlinear-operator", "model", ('faces = "all"', 'faces = "all"\noperator = "u*u_x"'),
     "pde.boundary.operator: operator 'u*u_x' is not linear in u and its derivatives "
     "(boundary operators must be)"),
    ("operator-without-u", "model", ('faces = "all"', 'faces = "all"\noperator = "x"'),
     "pde.boundary.operator: operator 'x' does not involve u"),
    ("operator-third-derivative", "model", ('faces = "all"', 'faces = "all"\noperator = "u_xxx"'),
     "pde.boundary.operator: unknown name 'u_xxx' in 'u_xxx'"),
    ("unknown-boundary-key", "model", ('faces = "all"', 'faces = "all"\noprator = "u_x"'),
     "pde.boundary.oprator: unknown key (did you mean 'operator'?)"),
    ("boundary-tables-key", "model", ('[pde.boundary]\nfaces = "all"',
                                      '[[pde.boundary]]\nfaces = ["x_lo"]\n'
                                      '[[pde.boundary]]\nfaces = ["x_hi"]\nvalue = "1"\n'
                                      'weight = 0'),
     "pde.boundary[1].weight: expected a finite number > 0"),
    ("periodic-unknown-axis", "model", ('solution = "sin(x)"',
                                        'solution = "sin(x)"\nperiodic = ["y"]'),
     "pde.periodic: expected distinct variable names from ['x']"),
    ("periodic-face-given", "model", ('solution = "sin(x)"\n[pde.boundary]\nfaces = "all"',
                                      'solution = "sin(x)"\nperiodic = ["x"]\n[pde.boundary]\n'
                                      'faces = ["x_lo"]'),
     "pde.boundary.faces: face 'x_lo' is on a periodic axis (it takes no condition)"),
    ("bad-variable", "model", ('["x"]', '["q"]'),
     "pde.variables: expected 1 to 3 distinct names from ['x', 'y', 'z', 't']"),
    ("bad-constant-name", "model", ('solution = "sin(x)"', 'solution = "sin(x)"\n'
                                    'constants = { sin = 2 }'),
     "pde.constants.sin: is not a usable constant name"),
    ("recipe-unknown-optimizer", "recipe", ('"adam"', '"sgd"'),
     "optimizer: unknown optimizer 'sgd' (choose from adam, profile, auto)"),
    ("recipe-unknown-key", "recipe", ("learning_rate", "learning_rat"),
     "learning_rat: unknown key (did you mean 'learning_rate'?)"),
    ("recipe-negative-rate", "recipe", ("0.01", "-1"),
     "learning_rate: expected a finite number > 0"),
    ("recipe-bad-type", "recipe", ("steps = 10", 'steps = "ten"'),
     "steps: expected int, got str"),
    ("recipe-sampling-key", "recipe", ("steps = 10", 'steps = 10\nsolver = "dense"'),
     "solver: is a key of sampling (nuts, gaussian) recipes, not of map ones"),
    ("recipe-sampling-recipe", "recipe", 'method = "nuts"\nchains = 2\n',
     "method: gpbayes solve takes a map recipe, not a nuts one (that is for gpbayes sample)"),
    ("recipe-extends-missing", "recipe", ("steps = 10", 'steps = 10\nextends = "nope.toml"'),
     "extends: no recipe nope.toml beside this file or packaged"),
    ("recipe-extends-itself", "recipe", ("steps = 10", 'steps = 10\nextends = "recipe.toml"'),
     "extends: recipe.toml extends itself (a cycle)"),
]


def edit(text, change):
    if isinstance(change, str):
        return change
    old, new = change
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, case):
    _, which, change, message = case
    model, recipe = tmp_path / "model.toml", tmp_path / "recipe.toml"
    model.write_text(edit(GOOD, change) if which == "model" else GOOD)
    recipe.write_text(edit(RECIPE, change) if which == "recipe" else RECIPE)
    out = tmp_path / "out"
    code = main(["solve", str(model), "--inference", str(recipe), "--out", str(out)])
    err = capsys.readouterr().err
    bad = model if which == "model" else recipe
    assert code == 2
    assert err == f"gpbayes: error: {bad}: {message}\n"
    assert not out.exists()


def test_missing_file_and_bad_steps(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["solve", str(tmp_path / "none.toml"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"gpbayes: error: {tmp_path / 'none.toml'}: cannot read "
                                       "file (No such file or directory)\n")
    model = tmp_path / "m.toml"
    model.write_text(GOOD)
    assert main(["solve", str(model), "--steps", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "gpbayes: error: command line: --steps: expected a whole " \
                                      "number >= 1\n"
    model.write_bytes(b"\xff\xfe\x00bad")
    assert main(["solve", str(model), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"gpbayes: error: {model}: not a text file\n"
    assert not out.exists()


def test_existing_output_is_not_touched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    model = tmp_path / "m.toml"
    model.write_text(GOOD.replace("[[0, 1]]", "[[1, 0]]"))
    assert main(["solve", str(model), "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == "{}"


@pytest.mark.parametrize("text, message", [
    ('method = "map"\n', 'method: expected method = "nuts" or "gaussian"'),
    ('method = "nuts"\nsweeps = 3\n', "sweeps: is a key of map recipes, not of nuts ones"),
])
def test_sample_takes_a_sampling_recipe(tmp_path, capsys, text, message):
    """``gpbayes sample`` with a map recipe, or a sampling recipe holding a map key: one
    line naming the file and the key, exit 2, nothing written."""
    model, recipe, out = tmp_path / "model.toml", tmp_path / "recipe.toml", tmp_path / "out"
    model.write_text(GOOD)
    recipe.write_text(text)
    code = main(["sample", str(model), "--inference", str(recipe), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == f"gpbayes: error: {recipe}: {message}\n"
    assert not out.exists()
