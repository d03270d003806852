"""Coverage of the unknown's interval over replicated noisy data sets, each against its
exact posterior (issue 39, point 4).

    python benchmarks/calibration.py [--problem helmholtz|heat] [--sets 50] [--first 0]
                                     [--method nuts|gaussian] [--held-map-tau]

``helmholtz``: inverse-helmholtz1d (``inverse_problems.helmholtz``: u_xx + k u = f, true
k = 20, 15 observations with noise sd 0.01, 200 points); ``heat``: inverse-heat2d
(``inverse_problems.heat``: u_t = nu u_xx from initial data, true nu = 0.2, 30
observations, 50 x 50, where the default integrates nu on a lattice: ``lattice``). Data sets
from seeds 0, 1, ...; each goes through the sampling recipe's MAP (``spec.map_recipe_of``)
and its posterior with the recipe's chains and draws, as ``gpbayes sample`` does (one CPU
device per chain). Each set's exact posterior (``posterior_reference``: finite
differences on 4001 points in 1-D, the method of lines on 16 Chebyshev points in 2-D,
then quadrature) gives its own 90% interval and the yardstick of the model's: its mean's
offset in exact sds and its sd ratio. Prints one line per set, then the counts of 90%
intervals (5% to 95% of the draws) that cover the truth. ``--held-map-tau``: without the
held-out tau_e (calibrate_tau_e off).
"""

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from inverse_problems import heat, helmholtz  # noqa: E402
from posterior_reference import reference  # noqa: E402

PROBLEMS = {  # name: (data set from a generator, the unknown, its truth, reference points)
    "helmholtz": (helmholtz, "k", 20.0, 4001),
    "heat": (heat, "nu", 0.2, 16),
}


def interval(problem, fit, method: str, seed: int, recipe, name: str) -> np.ndarray:
    """The unknown's draws under the method's posterior."""
    from gpbayes.infer import nuts, posterior

    if method == "gaussian":  # the draws of posterior.nc
        idata = posterior.to_arviz(posterior.gaussian_posterior(problem, fit), seed=seed)
        return idata.posterior[name].values.ravel()
    result = nuts.sample_nuts(problem, fit, chains=recipe.chains, warmup=recipe.warmup,
                              draws=recipe.draws, seed=seed, progress=False)
    site = problem.unknown_sites[name]
    draws = np.asarray(result.samples[site]).ravel()
    return draws if site == name else np.exp(draws)


def replicate(seed: int, method: str, calibrate: bool = True, problem: str = "helmholtz") -> dict:
    """One data set (seed): the unknown's mean, sd and 90% interval, the exact posterior's,
    and the time of the MAP and posterior."""
    import gpbayes as gb

    generate, name, truth, points = PROBLEMS[problem]
    recipe = gb.load_inference(method)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"set{seed}.toml"
        path.write_text(generate(np.random.default_rng(seed)))
        model = gb.load_model(path)
    start = time.perf_counter()
    fit = gb.fit_map(model, replace(gb.map_recipe_of(recipe), calibrate_tau_e=calibrate),
                     progress=False)
    k = interval(fit.problem, fit, method, seed, recipe, name)
    row = {"seed": seed, "name": name, "truth": truth, "mean": k.mean(), "sd": k.std(),
           "q05": np.quantile(k, 0.05), "q95": np.quantile(k, 0.95),
           "seconds": time.perf_counter() - start, "exact": reference(model, points)}
    row["z"] = (row["mean"] - row["exact"]["mean"]) / row["exact"]["sd"]
    row["sd_ratio"] = row["sd"] / row["exact"]["sd"]
    return row


def covers(row: dict) -> bool:
    return bool(row["q05"] <= row["truth"] <= row["q95"])


def line(row: dict) -> str:
    e = row["exact"]
    exact_covers = e["q05"] <= row["truth"] <= e["q95"]
    return (f"set {row['seed']:2d}: {row['name']} = {row['mean']:.4f} +- {row['sd']:.4f}, 90% "
            f"[{row['q05']:.4f}, {row['q95']:.4f}] {'covers' if covers(row) else 'misses'}; "
            f"exact {e['mean']:.4f} +- {e['sd']:.4f} {'covers' if exact_covers else 'misses'}; "
            f"{row['z']:+.2f} exact sd off, sd ratio {row['sd_ratio']:.2f}; "
            f"{row['seconds']:.0f} s")


def coverage(sets: int, method: str, calibrate: bool = True, log=print,
             problem: str = "helmholtz") -> int:
    """How many of ``sets`` replicated data sets (seeds 0, 1, ...) give a 90% interval
    of the unknown that covers the truth."""
    covered = 0
    for seed in range(sets):
        row = replicate(seed, method, calibrate, problem)
        covered += covers(row)
        log(line(row))
    return covered


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="helmholtz", choices=tuple(PROBLEMS))
    ap.add_argument("--sets", type=int, default=50)
    ap.add_argument("--first", type=int, default=0, help="the first set's seed")
    ap.add_argument("--method", default="nuts", choices=("nuts", "gaussian"))
    ap.add_argument("--held-map-tau", action="store_true")
    args = ap.parse_args()
    import jax

    from gpbayes.spec import load_inference
    from gpbayes.threads import cpu_devices, limit_blas_threads

    limit_blas_threads()  # as the command does
    cpu_devices(load_inference(args.method).chains)  # before JAX starts, as the command
    rows = []
    for seed in range(args.first, args.first + args.sets):
        rows.append(replicate(seed, args.method, not args.held_map_tau, args.problem))
        print(line(rows[-1]), flush=True)
        jax.clear_caches()  # each set compiles its own code: 45 sets filled LLVM's memory
    truth = PROBLEMS[args.problem][2]
    exact = sum(r["exact"]["q05"] <= truth <= r["exact"]["q95"] for r in rows)
    z, ratio = np.array([r["z"] for r in rows]), np.array([r["sd_ratio"] for r in rows])
    print(f"{sum(map(covers, rows))} of {args.sets} intervals cover "
          f"{PROBLEMS[args.problem][1]} = {truth} "
          f"({args.method}, calibrate_tau_e {not args.held_map_tau}); the exact posteriors' "
          f"{exact} of {args.sets}; offset from the exact mean |z| median {np.median(abs(z)):.2f}, "
          f"max {abs(z).max():.2f}; sd ratio {ratio.min():.2f} to {ratio.max():.2f}; "
          f"{np.median([r['seconds'] for r in rows]):.0f} s a set (median)")


if __name__ == "__main__":
    main()
