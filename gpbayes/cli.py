"""The ``gpbayes`` command: ``gpbayes solve MODEL [--inference RECIPE] [--steps N] ...``."""

import argparse
import contextlib
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from gpbayes.errors import NumericalError, SpecError
from gpbayes.io import write_atomic
from gpbayes.stops import Note
from gpbayes.threads import cpu_devices

UNTRUSTED = 3  # exit code: the result was written but fails its trust check (gpbayes.trust)
NOT_CONVERGED = 3  # exit code: the posterior was written but fails its convergence checks
DEFAULT_RECIPE = "map"  # the packaged default (inference/map.toml is its copy)
RECIPE_HELP = ("inference recipe: a TOML file, or a packaged recipe by name (map, precise, "
               "map-adam, nuts, gaussian: the files in the repository's inference/)")


def _parser():
    parser = argparse.ArgumentParser(
        prog="gpbayes", description="Solve high-frequency PDEs with Gaussian processes (GP-HM).")
    sub = parser.add_subparsers(dest="command")
    solve = sub.add_parser("solve", help="MAP solution of a model file",
                           description="MAP solution of a model file: summary.json, result.nc "
                                       "and figures in the output folder.")
    solve.add_argument("model", help="model file (TOML), e.g. models/poisson1d-sin100.toml")
    solve.add_argument("--inference", metavar="RECIPE", default=DEFAULT_RECIPE,
                       help=f"{RECIPE_HELP}; default {DEFAULT_RECIPE}")
    solve.add_argument("--steps", type=int, help="override the recipe's number of steps")
    solve.add_argument("--out", metavar="DIR", help="output folder (default runs/<name>)")
    solve.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    solve.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    solve.add_argument("--resume", metavar="DIR",
                       help="continue an interrupted Adam run from DIR/checkpoint.npz "
                            "(writes into DIR unless --out is given)")
    sample = sub.add_parser("sample", help="posterior of a model: NUTS or the Gaussian posterior",
                            description="Posterior uncertainty: a MAP first, then NUTS (or the "
                                        "exact Gaussian posterior with --method gaussian).")
    sample.add_argument("model", help="model file (TOML)")
    sample.add_argument("--inference", metavar="RECIPE", default=None,
                        help=f"sampling {RECIPE_HELP}; default: that of --method (nuts)")
    sample.add_argument("--method", choices=("nuts", "gaussian"),
                        help="override the recipe's method")
    sample.add_argument("--out", metavar="DIR", help="output folder (default runs/<name>-<method>)")
    sample.add_argument("--resume", metavar="DIR",
                        help="sample from the MAP saved in DIR/map (skips the MAP); writes "
                             "into DIR unless --out is given")
    bench = sub.add_parser("bench", help="error, steps and time per model file, as a table",
                           description="Solve each model (default: every models/*.toml) and "
                                       "print error, steps, time and stop reason; writes "
                                       "bench.csv and bench.json in the output folder.")
    bench.add_argument("models", nargs="*", help="model files (default models/*.toml)")
    bench.add_argument("--inference", metavar="RECIPE", default=DEFAULT_RECIPE,
                       help=f"{RECIPE_HELP}; default {DEFAULT_RECIPE}")
    bench.add_argument("--steps", type=int, help="override the recipe's number of Adam steps")
    bench.add_argument("--out", metavar="DIR", default="runs/bench", help="output folder")
    plot = sub.add_parser("plot", help="redraw the figures of a result folder",
                          description="Redraw the figures of a folder written by gpbayes "
                                      "solve or sample (MAP, NUTS or Gaussian posterior; "
                                      "and its map/ subfolder) from its files.")
    plot.add_argument("folder", help="result folder, e.g. runs/poisson1d-sin100")
    plot.add_argument("--model", help="the model file (default FOLDER/model.toml, which "
                                      "solve and sample write)")
    return parser


def _plot(args):
    import gpbayes as gb
    from gpbayes import plots

    folder = Path(args.folder)
    model = Path(args.model) if args.model else folder / "model.toml"
    if not model.exists():
        raise SpecError("no model file (solve and sample write model.toml into their folder; "
                        "else give --model)", model)
    if not any((folder / f).exists() for f in ("result.nc", "posterior.nc")):
        raise SpecError("no result.nc or posterior.nc: not a result folder", folder)
    written = plots.redraw(folder, gb.load_model(model))
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _keep_model(model: str, out: Path) -> None:
    """A copy of the model file beside its results (gpbayes plot reads it)."""
    out.mkdir(parents=True, exist_ok=True)
    text = Path(model).read_text()
    write_atomic(out / "model.toml", lambda f: f.write_text(text))


def _recipe(args):
    import gpbayes as gb

    if args.steps is not None and args.steps < 1:
        raise gb.SpecError("expected a whole number >= 1", "command line", "--steps")
    recipe = gb.load_inference(args.inference)
    if not isinstance(recipe, gb.Recipe):
        raise gb.SpecError(f"gpbayes solve takes a map recipe, not a {recipe.method} one "
                           "(that is for gpbayes sample)", recipe.source, "method")
    return _announce(replace(recipe, steps=args.steps) if args.steps else recipe)


def _announce(recipe):
    """Say which recipe runs (on stderr: stdout may carry --json)."""
    print(f"gpbayes: recipe {recipe.source}" + (f": {recipe.description}"
                                                if recipe.description else ""), file=sys.stderr)
    return recipe


def _bench(args):
    from gpbayes import bench

    models = args.models or sorted(str(p) for p in Path("models").glob("*.toml"))
    if not models:
        raise SpecError("no model files given and none in models/", "command line", "models")
    recipe = _recipe(args)
    print(bench.header())
    bench.run(models, recipe, args.out)
    print(f"wrote {args.out}/bench.csv, bench.json")
    return 0


@contextlib.contextmanager
def _catch_signals():
    """SIGINT and SIGTERM set a flag that the fit checks between chunks of steps."""
    caught = []

    def handler(signum, _frame):
        caught.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: caught[0] if caught else None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _signal_code(stats: dict) -> int:
    """The shell's exit code of a run stopped by a signal: 130 for SIGINT, 143 for SIGTERM."""
    return 130 if stats.get("signal") == "SIGINT" else 143


def _sample(args):
    import gpbayes as gb
    from gpbayes import checkpoint, plots, spec
    from gpbayes.infer import marginal, nuts, posterior

    # the recipe of the method asked for, unless one is named
    recipe = gb.load_inference(args.inference or args.method or "nuts", method=args.method)
    if not isinstance(recipe, gb.SampleRecipe):
        raise SpecError("expected method = \"nuts\" or \"gaussian\"", recipe.source, "method")
    _announce(recipe)
    cpu_devices(recipe.chains)  # one per chain, before the first JAX computation
    problem = gb.load_model(args.model)
    method = recipe.method
    if method == "nuts" and not recipe.sample_hyper and marginal.sampler(problem) in (
            "lattice", "joint"):
        print("gpbayes: note: " + _nuts_note(problem), file=sys.stderr)
    map_recipe = _announce(spec.map_recipe_of(recipe))
    out = Path(args.out or args.resume or Path("runs") / f"{problem.name}-{method}")
    saved = (checkpoint.load(Path(args.resume) / "map", problem, map_recipe)
             if args.resume else None)
    with _catch_signals() as interrupt:
        if saved is None:
            fit = gb.fit_map(problem, map_recipe, interrupt=interrupt)
            fit.save(out / "map")
            _keep_model(args.model, out / "map")
            checkpoint.save(fit, out / "map")
            if fit.interrupted or fit.failed:
                print(f"gpbayes: the MAP stopped: {fit.stop_reason}", file=sys.stderr)
                return _signal_code(fit.stop_stats) if fit.interrupted else 1
        else:
            fit = checkpoint.map_fit(saved, problem, map_recipe)
        trusted = _map_trusted(problem, fit, recipe)  # None: the posterior's mean, later
        problem = fit.problem  # the kept kernel (the profile solver may pick a plain family)
        _keep_model(args.model, out)
        if method == "gaussian":
            post = posterior.gaussian_posterior(
                problem, fit, recipe.solver, recipe.samples, recipe.seed, recipe.cg_tolerance,
                recipe.cg_max_iterations, progress=sys.stderr.isatty())
            summary = posterior.save(post, fit, out, recipe.source)
            written = plots.posterior_figures(out, problem, fit)
            _print_gaussian(summary, out, written)
            if trusted is None:
                trusted = _trusted(summary["posterior_mean_check"])
            if post.cg is not None and not post.cg["converged"]:
                print(f"gpbayes: CG stopped at cg_max_iterations = {recipe.cg_max_iterations} "
                      f"before cg_tolerance; the sd in {out} is not reliable", file=sys.stderr)
                return 1
            return _converged(summary) or trusted
        result = nuts.sample_nuts(problem, fit, chains=recipe.chains, warmup=recipe.warmup,
                                  draws=recipe.draws, seed=recipe.seed,
                                  progress=sys.stderr.isatty(), interrupt=interrupt,
                                  sample_hyper=recipe.sample_hyper)
        summary, table = nuts.save(result, out, recipe.source)
        plots.posterior_figures(out, problem, fit)
        if trusted is None and not result.interrupted:
            trusted = _trusted(summary["posterior_mean_check"])
    if result.interrupted:
        what = "the partial posterior" if result.u_test.shape[1] else "summary.json (no draws)"
        print(f"gpbayes: {result.stop_reason}; wrote {what} to {out} and the "
              f"MAP to {out}/map (gpbayes sample MODEL --resume {out} samples again from it)",
              file=sys.stderr)
        if nuts.worker_running():  # a compiled loop no signal stops: end without it
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(_signal_code(result.stop_stats))
        return _signal_code(result.stop_stats)
    _print_nuts(summary, table, out)
    if Note.STEP_COLLAPSED in result.notes:
        print(f"gpbayes: warning: {result.stop_reason}", file=sys.stderr)
        return 1
    return _converged(summary) or trusted


def _print_nuts(s: dict, table, out: Path) -> None:
    """One compact block: the scalars (unknowns, sampled hyperparameters; u's are in
    summary.csv), how they were drawn, the files."""
    if len(table):
        print(table.to_string(max_rows=12))
    if "lattice" in s:
        print(f"{s['name']}: {s['chains']} x {s['draws_per_chain']} independent draws from a "
              f"lattice of {s['lattice']['nodes']} nodes in {s['wall_time_s']:.1f} s (U "
              f"integrated out; no NUTS)")
    else:
        print(f"{s['name']}: {s['chains']} chains x {s['draws_per_chain']} draws in "
              f"{s['wall_time_s']:.1f} s, {s['divergences']} divergences, u max r_hat "
              f"{s['u_test_max_r_hat']:.3f}, min ess_bulk {s['u_test_min_ess_bulk']:.0f} "
              f"({s['ess_bulk_per_s']:.0f}/s)")
    _print_tau_e(s)
    print(f"wrote {out}/posterior.nc, summary.csv, summary.json, posterior.png; the MAP in "
          f"{out}/map")


def _map_trusted(problem, fit, recipe) -> int | None:
    """The MAP's trust check, or None where U is integrated out (the posterior's mean is
    checked after it instead: the joint MAP's U counts the source as evidence); a note
    then says the MAP failed it."""
    from gpbayes.infer import marginal
    from gpbayes.trust import failed_parts

    later = marginal.sampler(problem) in ("nuts", "lattice") and (
        not recipe.sample_hyper if recipe.method == "nuts" else recipe.solver == "auto")
    if not later:
        return _trusted(fit.check)
    if not fit.check["passed"]:
        print(f"gpbayes: note: the MAP fails its trust check ({failed_parts(fit.check)}); U is "
              f"integrated out, so the posterior's mean is checked instead", file=sys.stderr)
    return None


def _nuts_note(problem) -> str:
    """What the default sampler does with unknowns on a grid beyond NUTS's marginal
    (``marginal.sampler``)."""
    from gpbayes.infer import marginal

    size = problem.size
    if marginal.sampler(problem) == "lattice":
        how = ("a dense solve" if size <= marginal.LAPLACE_MAX else
               "a set of matrix-free solves")
        return (f"on these {size} grid points (beyond {marginal.MARGINAL_MAX}) each "
                f"evaluation of the unknowns' marginal is {how}, too dear for NUTS's "
                f"thousands: they are integrated on a lattice instead (U integrated out, "
                f"independent draws)")
    return (f"beyond {marginal.LAPLACE_MAX} grid points ({size} here) with a PDE nonlinear in U "
            f"or without measurements, NUTS samples U with the unknowns (their marginal is out "
            f"of reach), which can take hours or fail; --method gaussian gives their joint "
            f"Laplace approximation in minutes")


def _print_gaussian(s: dict, out: Path, figures: list) -> None:
    """One compact block: the unknowns (natural units, 94% HDI), u's sd, the files."""
    for name, u in s["unknowns"].items():
        print(f"{name:>10} = {u['mean']:.6g} ± {u['sd']:.3g}  (94% HDI "
              f"[{u['hdi_3%']:.6g}, {u['hdi_97%']:.6g}])")
    solver = s["solver"] + (f", {s['samples']} draws" if s["solver"] == "cg" else "")
    print(f"{s['name']}: Gaussian posterior ({solver}); u's sd on the test grid "
          f"{s['u_test_sd_min']:.2e} to {s['u_test_sd_max']:.2e}")
    _print_tau_e(s)
    print(f"wrote {out}/posterior.nc, summary.json, "
          + ", ".join(Path(f).name for f in figures) + f"; the MAP in {out}/map")


def _print_tau_e(s: dict) -> None:
    """Where log tau_e was settled by its marginal maximum: one line saying so."""
    t = s.get("tau_e")
    if t:
        edge = " (the edge of its search: the evidence is flat there)" if t["at_edge"] else ""
        print(f"log tau_e = {t['log_tau_e']:.1f}, its marginal maximum{edge} (the MAP's "
              f"{t['map']:.1f})")


def _converged(summary: dict) -> int:
    """0, or NOT_CONVERGED with one warning line naming what failed (the posterior's
    checks, ``gpbayes.infer.diagnostics``)."""
    if summary["converged"]:
        return 0
    print("gpbayes: warning: the posterior did not converge: " + "; ".join(summary["failures"])
          + " (see summary.json; run longer or with more chains)", file=sys.stderr)
    return NOT_CONVERGED


def _solve(args):
    import gpbayes as gb
    from gpbayes import checkpoint

    problem = gb.load_model(args.model)
    recipe = _recipe(args)
    out = Path(args.out or args.resume or Path("runs") / problem.name)
    resume = checkpoint.load(args.resume, problem, recipe) if args.resume else None
    with _catch_signals() as interrupt:
        fit = gb.fit_map(problem, recipe, resume=resume, interrupt=interrupt)
        summary = fit.save(out)
        if not args.no_figures:
            from gpbayes import plots  # matplotlib loads only when figures are drawn

            plots.save_all(fit, out)
        _keep_model(args.model, out)
        if fit.opt_state is not None:
            checkpoint.save(fit, out)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, out, figures=not args.no_figures)
    if fit.interrupted:
        print(f"gpbayes: {fit.stop_reason}; wrote the partial result and checkpoint to {out}",
              file=sys.stderr)
        return _signal_code(fit.stop_stats)
    if fit.failed:
        return 1
    return _trusted(fit.check)


def _trusted(check: dict) -> int:
    """0, or UNTRUSTED with a warning line when a result fails its trust ``check``."""
    from gpbayes.trust import warning

    if check["passed"]:
        return 0
    print(warning(check), file=sys.stderr)
    return UNTRUSTED


KERNEL_WORDS = {
    "adam": "learned (Adam, with U and the precisions)",
    "learned": "learned from the chosen start (it raised the log joint, the check no worse)",
    "off": "held at the chosen start (learning is off: learn_iterations = 0)",
    "passed": "held at the chosen start (its check is at or below refine_above: no residual "
              "left to learn from)",
    "large": "held at the chosen start (the grid is above learn_max_points)",
    "diagonal": ("held at the chosen start (the boundary rows are by their diagonal: each "
                 "of the learning's solves would take about 1000 CG iterations)"),
    "worse": "held at the chosen start (learning did not raise the log joint without "
             "worsening the check)",
    "interrupted": "held at the chosen start (interrupted before learning)",
    "failed": "held (no start ended with a finite log joint)",
}  # one phrase per ``results.KERNEL_WHY`` code


def story(s: dict) -> list[str]:
    """The solve's story from its summary: the start kept and why, the kernel learned or
    held and why, and why the run stopped."""
    out = []
    start = s.get("start") or {}
    if start:
        out.append(f"  start                 {start['chosen']}: the largest log joint of the "
                   f"{start['passed']} of {start['finished']} finished starts that pass the "
                   "check")
    out.append(f"  kernel                {s['family']}, {KERNEL_WORDS[s['kernel_why']]}; "
               "live components "
               + ", ".join(f"{v} {n}" for v, n in s["live_components"].items()))
    out.append(f"  stop                  {s['stop_reason']}")
    return out


def _print_summary(s, out, figures=True):
    err = s["rel_l2_error"]
    lines = [f"{s['name']}: {s['steps']} steps in {s['wall_time_s']:.1f} s on {s['device']}",
             f"  relative L2 error     {err:.3e}" if err is not None else "  (no exact solution)",
             f"  max abs error         {s['max_abs_error']:.3e}" if err is not None else "",
             f"  equation residual rms {s['equation_residual_rms']:.3e}",
             f"  boundary rms          {s['boundary_rms']:.3e}",
             *story(s),
             ("  unknowns              " + ", ".join(f"{k} = {v:.6g}" for k, v in
                                                    s["unknowns"].items())
              if s["unknowns"] else ""),
             "  trust check           " + ("passed" if s["check"]["passed"] else "FAILED") + ": "
             + ", ".join(f"{k} {v:.2e} (<= {s['check']['thresholds'][k]:g})"
                         for k, v in s["check"]["values"].items()),
             f"  recipe                {s['recipe']['source']}",
             f"  wrote {out}/summary.json, result.nc" + (", *.png" if figures else "")]
    print("\n".join(line for line in lines if line))


def main(argv: list[str] | None = None) -> int:
    from gpbayes.threads import limit_blas_threads

    limit_blas_threads()  # fast on small CPUs; the user's OPENBLAS_NUM_THREADS wins
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return {"solve": _solve, "sample": _sample, "bench": _bench,
                "plot": _plot}[args.command](args)
    except SpecError as err:
        print(f"gpbayes: error: {err}", file=sys.stderr)
        return 2
    except NumericalError as err:
        print(f"gpbayes: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpbayes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
