"""The trust check of a result: can it be believed without the exact solution?

Three checks, from the equation, the source, the boundary data and the observations only:
- ``pde``: the PDE residual at the cell midpoints, between the collocation points, relative
  to the equation's largest term there (or the source). A kernel that fits the grid but
  not the function between its points (an under-resolved grid, an aliased frequency, a
  poor family) fails it.
- ``boundary``: the rms of operator[u] - g over the conditions, relative to the size of g
  or of the conditions' terms (rms U for Dirichlet).
- ``observations``: the rms of the observations' standardized residuals (about 1 when
  model and noise sd are right).
Where the model file gives the equation or boundary a noise sd, those checks too are the
rms of the residual over that sd (threshold NOISY); where only some conditions have their
own noise sd, ``boundary`` covers the tempered ones and ``boundary_data`` the noisy ones.
Thresholds are calibrated on the paper cases, the suite and made-up problems
(benchmarks/journal.md, "Trust check"). A nonlinear PDE with several solutions can pass
with the wrong one: no check that ignores the exact solution can tell them apart.
"""

import numpy as np

THRESHOLDS = {"pde": 1e-3, "boundary": 1e-4, "observations": 3.0}
NOISY = 3.0  # threshold of a residual over its model file's noise sd
ADVICE = {"pde": "a finer grid (more points per wavelength), another family "
                 "(kernel.family = \"matern52\" or \"se\") or more components",
          "boundary": "a larger boundary_weight or a smaller boundary_noise",
          "boundary_data": "check the boundary noise sds and the boundary data",
          "observations": "check the observations' noise sd and the model"}


def trust_check(fit) -> dict:
    """{"values", "thresholds", "passed", "failed": [names], "advice"} of a MapFit."""
    p = fit.problem
    values = {"pde": fit.pde_check, "boundary": fit.boundary_relative}
    thresholds = dict(THRESHOLDS)
    if p.equation_noise is not None:  # the model allows a residual of this sd
        values["pde"], thresholds["pde"] = fit.midpoint_rms / p.equation_noise, NOISY
    t = p.tempered_rows
    if t.size and not t.any():  # every boundary row noisy: its mismatch over its noise sd
        values["boundary"], thresholds["boundary"] = fit.boundary_z, NOISY
    elif not t.all():  # some conditions noisy (their own noise), the others tempered
        values["boundary_data"], thresholds["boundary_data"] = fit.boundary_z, NOISY
    if p.observations is not None:
        points, data, noise = p.observations
        z = (fit.predict(points) - np.asarray(data)) / np.asarray(noise)
        values["observations"] = float(np.sqrt(np.mean(z**2)))
    failed = [k for k, v in values.items() if not v <= thresholds[k]]  # NaN fails
    return {"values": values, "thresholds": {k: thresholds[k] for k in values},
            "passed": not failed, "failed": failed,
            "advice": "; ".join(f"{k}: try {ADVICE[k]}" for k in failed)}


def failed_parts(check: dict) -> str:
    """What failed, e.g. "observations 5.7 > 3"."""
    return ", ".join(f"{k} {check['values'][k]:.2g} > {check['thresholds'][k]:g}"
                     for k in check["failed"])


def warning(check: dict) -> str:
    """One line naming what failed and what to try."""
    return (f"gpbayes: warning: the result fails its trust check ({failed_parts(check)}); "
            f"{check['advice']}")

