"""Whether a posterior run can be trusted: the convergence checks of NUTS (ArviZ's
conventions, Vehtari et al. 2021) and of the Gaussian (Laplace) posterior.

Each check returns a list of failures, one short phrase each; an empty list means the
run converged. The command line exits 3 and prints them on one line when any fail.
"""

import numpy as np

R_HAT_MAX = 1.01  # split r_hat above this: the chains have not mixed
ESS_PER_CHAIN = 100  # ess_bulk below this many per chain: too few effective draws
DIVERGENT_SHARE = 0.005  # divergent transitions above this share of the draws
TREE_CAP_SHARE = 0.5  # draws that hit the tree-depth cap above this share


def scalar_names(problem, idata) -> list[str]:
    """The unknowns among the posterior's variables: a trace plot and a summary row each."""
    return [n for n in problem.unknown_sites if n in idata.posterior]


def checked_names(idata) -> list[str]:
    """The posterior variables whose r_hat and ess_bulk decide convergence: the unknowns
    and the sampled hyperparameters (every variable but u's fields)."""
    return [n for n in idata.posterior.data_vars if n not in ("u", "u_test")]


def nuts_failures(table, names: list[str], extra: dict, chains: int, tree_cap: int) -> list[str]:
    """Failures of a NUTS run: r_hat and ess_bulk of the scalars ``names`` (rows of the
    ``az.summary`` ``table``: the unknowns and any sampled hyperparameters), the share
    of divergent draws and of draws at the tree-depth cap (``extra``: sample stats with
    shape (chains, draws))."""
    out = []
    for name in names:
        rows = table.loc[[i for i in table.index if i == name or i.startswith(f"{name}[")]]
        r_hat, ess = float(rows["r_hat"].max()), float(rows["ess_bulk"].min())
        if not r_hat <= R_HAT_MAX:
            out.append(f"{name} r_hat {r_hat:.3f} > {R_HAT_MAX}")
        if not ess >= ESS_PER_CHAIN * chains:
            out.append(f"{name} ess_bulk {ess:.0f} < {ESS_PER_CHAIN} per chain")
    diverging = np.asarray(extra.get("diverging", np.zeros((chains, 0))))
    if diverging.size and diverging.mean() > DIVERGENT_SHARE:
        out.append(f"{int(diverging.sum())} divergences ({diverging.mean():.1%} of draws "
                   f"> {DIVERGENT_SHARE:.1%})")
    steps = np.asarray(extra.get("num_steps", np.zeros((chains, 0))))
    if steps.size and np.mean(steps >= tree_cap) > TREE_CAP_SHARE:
        out.append(f"{np.mean(steps >= tree_cap):.0%} of draws at the tree-depth cap")
    return out


def laplace_failures(diagonal: np.ndarray) -> list[str]:
    """Failures of a Gaussian posterior from the diagonal of its precision's triangular
    factor (R with R^T R = the Gauss-Newton Hessian, or the Cholesky factor of the
    unknowns' Schur complement): not positive definite when an entry is zero or not
    finite (a failed Cholesky gives NaN)."""
    d = np.abs(np.asarray(diagonal, float))
    if not np.all(np.isfinite(d)) or np.any(d == 0):
        return ["the posterior precision is not positive definite at the MAP"]
    return []
