"""Coverage of the unknown's interval over replicated noisy data sets (issue 14, point 4).

    python benchmarks/calibration.py [--sets 20] [--method gaussian|nuts] [--held-map-tau]

inverse-helmholtz1d (``inverse_problems.helmholtz``: u_xx + k u = f, true k = 20, 15
observations with noise sd 0.01, 200 points) with data sets from seeds 0, 1, ...; each
goes through the sampling recipe's MAP (``spec.map_recipe_of``) and its posterior, as
``gpbayes sample`` does. Prints one line per set and the count of 90% intervals that
cover the truth. ``--held-map-tau``: without the held-out tau_e (calibrate_tau_e off).
"""

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import gpbayes as gb
from gpbayes.infer import nuts, posterior
from gpbayes.spec import map_recipe_of

sys.path.insert(0, str(Path(__file__).parent))
from inverse_problems import helmholtz  # noqa: E402

TRUE_K = 20.0


def interval(problem, fit, method: str, seed: int) -> tuple:
    """(mean, sd, 5% and 95% points) of k under the method's posterior."""
    if method == "gaussian":  # the draws of posterior.nc
        idata = posterior.to_arviz(posterior.gaussian_posterior(problem, fit), seed=seed)
        k = idata.posterior["k"].values.ravel()
    else:
        result = nuts.sample_nuts(problem, fit, chains=2, warmup=300, draws=300, seed=seed,
                                  progress=False)
        k = result.samples["k"].ravel()
    return float(k.mean()), float(k.std()), *np.quantile(k, [0.05, 0.95])


def coverage(sets: int, method: str, calibrate: bool = True, log=print) -> int:
    """How many of ``sets`` replicated data sets (seeds 0, 1, ...) give a 90% interval
    of k that covers the truth."""
    recipe = replace(map_recipe_of(gb.load_inference(method)), calibrate_tau_e=calibrate)
    covered = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(sets):
            path = Path(tmp) / f"set{seed}.toml"
            path.write_text(helmholtz(np.random.default_rng(seed)))
            problem = gb.load_model(path)
            start = time.perf_counter()
            fit = gb.fit_map(problem, recipe, progress=False)
            mean, sd, lo, hi = interval(fit.problem, fit, method, seed)
            hit = lo <= TRUE_K <= hi
            covered += hit
            log(f"set {seed:2d}: k = {mean:.4f} +- {sd:.4f}, 90% [{lo:.4f}, {hi:.4f}] "
                f"{'covers' if hit else 'misses'}; tau_e {np.exp(fit.params['log_tau_e']):.3g}, "
                f"error of u {fit.rel_l2_error:.2e}, {time.perf_counter() - start:.0f} s")
    return covered


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=20)
    ap.add_argument("--method", default="gaussian", choices=("gaussian", "nuts"))
    ap.add_argument("--held-map-tau", action="store_true")
    args = ap.parse_args()
    covered = coverage(args.sets, args.method, not args.held_map_tau,
                       lambda line: print(line, flush=True))
    print(f"{covered} of {args.sets} intervals cover k = {TRUE_K} "
          f"({args.method}, calibrate_tau_e {not args.held_map_tau})")


if __name__ == "__main__":
    main()
