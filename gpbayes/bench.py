"""``gpbayes bench``: error, steps, time and stop reason per model file, as a table."""

import csv
from pathlib import Path

from gpbayes.io import write_atomic, write_json

# Relative L2 errors of GP-HM-StM in the paper (best of 20 checkpoints, chosen with the
# exact solution) and the reference's Adam step counts; ../shared/paper-targets.md.
PAPER = {
    "poisson1d-sin100": (6.53e-7, 100_000),
    "poisson1d-sin6cos100": (5.47e-6, 100_000),
    "poisson1d-xsin200": (8.98e-7, 100_000),
    "poisson1d-multiscale": (5.45e-4, 1_000_000),
    "poisson1d-sin500": (4.22e-4, 1_000_000),
    "allencahn1d-sin100": (4.90e-6, 100_000),
    "allencahn1d-sin6cos100": (4.76e-6, 100_000),
    "poisson2d-sin100": (6.87e-5, 100_000),
    "poisson2d-sin6cos20": (1.02e-3, 1_000_000),
    "allencahn2d-multiscale": (5.68e-3, 3_000_000),
    "advection-beta200": (1.43e-4, 1_000_000),
}
COLUMNS = ("name", "rel_l2_error", "paper_error", "meets_paper", "steps", "wall_time_s",
           "trusted", "converged", "stop", "stop_reason", "device")


def run(models: list, recipe, out_dir: str | Path, steps: int | None = None,
        progress: bool | None = None) -> list[dict]:
    """Solve each model; write bench.csv and bench.json into out_dir; return the rows."""
    import gpbayes as gb

    rows = []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = [gb.load_model(m) for m in models]  # every file is checked before any run
    for problem in problems:
        fit = gb.fit_map(problem, recipe, steps=steps, progress=progress)
        s = fit.save(out / problem.name)
        paper = PAPER.get(problem.name, (None, None))[0]
        err = s["rel_l2_error"]
        row = {k: s.get(k) for k in COLUMNS}
        row["trusted"] = s["check"]["passed"]
        row["paper_error"] = paper
        row["meets_paper"] = None if paper is None or err is None else bool(err <= paper)
        rows.append(row)
        print(format_row(row), flush=True)
    write_table(rows, out)
    return rows


def header() -> str:
    return (f"{'case':<24} {'error':>9} {'paper':>9} {'ok':>3} {'trust':>5} {'steps':>7} "
            f"{'time s':>8}  stop")


def format_row(r: dict) -> str:
    def e(v):
        return f"{v:9.2e}" if v is not None else f"{'-':>9}"

    ok = {True: "yes", False: "no", None: "-"}[r["meets_paper"]]
    trust = "yes" if r["trusted"] else "NO"
    return (f"{r['name']:<24} {e(r['rel_l2_error'])} {e(r['paper_error'])} {ok:>3} {trust:>5} "
            f"{r['steps']:>7} {r['wall_time_s']:8.1f}  {r['stop_reason']}")


def write_table(rows: list[dict], out: Path) -> None:
    def csv_writer(path):
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)

    write_atomic(out / "bench.csv", csv_writer)
    write_json(out / "bench.json", rows)
