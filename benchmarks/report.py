"""The accuracy-and-time tables of benchmarks/README.md, regenerated: each case solved end
to end by `gpbayes solve FILE --json --no-figures` in its own process (import,
compilation, every start, prediction), one after another, with the default recipe.

Prints markdown: a header line (commit, date, machine, whether it was shared: the load
average beside this run), then one table per group (the paper's cases, the suite in
../shared/suite with its targets, the condition models). `make bench-report` runs it.

    python benchmarks/report.py [--group paper|suite|conditions ...] [--case NAME ...]
                                [--inference RECIPE] [--gpbayes PATH]
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT.parent / "shared" / "suite"
PAPER = ["poisson1d-sin100", "poisson1d-sin6cos100", "poisson1d-xsin200",
         "poisson1d-multiscale", "poisson1d-sin500", "allencahn1d-sin100",
         "allencahn1d-sin6cos100", "poisson2d-sin6cos20", "advection-beta200",
         "poisson2d-sin100", "allencahn2d-multiscale"]
CONDITIONS = {"heat1d-neumann": 1e-5, "poisson2d-mixed": 1e-5, "poisson1d-robin": 1e-6,
              "advection-periodic": 1e-4, "wave1d": 1e-4}  # issue 15's bars


def suite_targets() -> dict:
    """{name: target} from the table of ../shared/suite/README.md."""
    out = {}
    for line in (SUITE / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*(g\d\d-[\w-]+)\s*\|[^|]*\|\s*([0-9.e-]+)\s*\|", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def solve(gpbayes: str, model: Path, recipe: str = "map") -> dict:
    """One case end to end: {"error", "seconds", "trusted", "exit"}."""
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
               OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        r = subprocess.run([gpbayes, "solve", str(model), "--inference", recipe, "--json",
                            "--no-figures", "--out", out], capture_output=True, text=True,
                           env=env)
        seconds = time.perf_counter() - t
    try:
        s = json.loads(r.stdout)
        return {"error": s["rel_l2_error"], "seconds": seconds,
                "trusted": s["check"]["passed"], "exit": r.returncode}
    except (json.JSONDecodeError, KeyError):
        return {"error": None, "seconds": seconds, "trusted": False, "exit": r.returncode}


def table(rows: list, target_name: str) -> str:
    out = [f"| case | error | {target_name} | met | trust check | time s |",
           "|---|---|---|---|---|---|"]
    for name, target, r in rows:
        err = "failed" if r["error"] is None else f"{r['error']:.2e}"
        met = "-" if r["error"] is None else ("yes" if r["error"] <= target else "no")
        trust = "passed" if r["trusted"] else f"failed (exit {r['exit']})"
        out.append(f"| {name} | {err} | {target:.2e} | {met} | {trust} | {r['seconds']:.0f} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", nargs="*", choices=("paper", "suite", "conditions"),
                        default=["paper", "suite", "conditions"])
    parser.add_argument("--case", nargs="*", help="only these cases (names)")
    parser.add_argument("--inference", default="map", help="the recipe (default map)")
    parser.add_argument("--gpbayes", default=str(ROOT / ".venv" / "bin" / "gpbayes"))
    args = parser.parse_args()
    from gpbayes.bench import PAPER as PAPER_ERRORS

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    load = os.getloadavg()[0]
    print(f"commit {commit}, {date.today()}, {platform.machine()} with {os.cpu_count()} "
          f"cores, load average {load:.1f} at the start, recipe {args.inference}", flush=True)
    groups = {"paper": ([(n, ROOT / "models" / f"{n}.toml", PAPER_ERRORS[n][0])
                         for n in PAPER], "paper GP-HM-StM"),
              "suite": ([(n, SUITE / f"{n}.toml", t) for n, t in suite_targets().items()],
                        "target"),
              "conditions": ([(n, ROOT / "models" / f"{n}.toml", t)
                              for n, t in CONDITIONS.items()], "bar")}
    loads = [load]
    for group in args.group:
        cases, target_name = groups[group]
        cases = [c for c in cases if not args.case or c[0] in args.case]
        if not cases:
            continue
        rows = []
        for name, path, target in cases:
            rows.append((name, target, solve(args.gpbayes, path, args.inference)))
            loads.append(os.getloadavg()[0])
            print(f"  {name}: {rows[-1]}", file=sys.stderr, flush=True)
        print(f"\n### {group}\n\n{table(rows, target_name)}", flush=True)
    shared = max(loads) > (os.cpu_count() or 1) + 0.5  # one solve alone reaches ~2 on 2 cores
    print(f"\nload average at most {max(loads):.1f} during the run: the machine was "
          + ("shared (times are contended)" if shared else "not shared"))


if __name__ == "__main__":
    main()
