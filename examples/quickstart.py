"""Quickstart: solve u_xx = f for u = sin(20x) on [0, 2pi] with the Python API.

Runs in well under a minute on a laptop CPU:  python examples/quickstart.py
"""

import numpy as np

import gpbayes as gb
from gpbayes import operators, plots
from gpbayes.problem import Face
from gpbayes.threads import limit_blas_threads

limit_blas_threads()  # one BLAS thread: 4-5x faster on 2 cores (OPENBLAS_NUM_THREADS wins)

# A problem can come from a model file (gb.load_model("models/poisson1d-sin100.toml"))
# or be built in Python:
x = ("x",)
problem = gb.Problem(
    name="quickstart",
    variables=x,
    domain=[(0.0, 2 * np.pi)],
    grid=(200,),
    test_grid=(300,),
    equation=operators.parse("u_xx", set(x), allow_u=True, variables=x),
    solution=operators.parse("sin(20*x)", set(x)),  # gives the source and boundary values
    faces=(Face(0, "lo"), Face(0, "hi")),
    components=10,
    max_frequency=5.0,  # cycles per unit length; sin(20x) has 20/(2 pi) = 3.18
)

recipe = gb.load_inference("map")  # the default recipe of `gpbayes solve` ("map-adam": the paper's)
fit = gb.fit_map(problem, recipe)

print(f"relative L2 error {fit.rel_l2_error:.2e} after {fit.steps} steps, "
      f"{fit.wall_time_s:.1f} s; trusted: {fit.check['passed']}")
spec = fit.spectrum()["x"]
strongest = np.argsort(spec["weight"])[::-1][:3]
print(f"kernel {fit.problem.family}; strongest components (frequency, weight):",
      [(round(spec.get("mu", [0.0] * len(spec["weight"]))[i], 3), f"{spec['weight'][i]:.2e}")
       for i in strongest])
print("prediction at x = 1.0:", fit.predict([1.0])[0], "exact:", np.sin(20.0))
fit.save("runs/quickstart")  # summary.json, result.nc
plots.save_all(fit, "runs/quickstart")  # the figures
print("wrote runs/quickstart/summary.json, result.nc, solution.png, error.png, spectrum.png")
