"""Linear algebra on tensor grids, operators apart from solvers (the lineax way):
``KronSum`` (a separable operator) and its direct solver ``KronSumSolver``, and
``square.SquareSystem`` (the collocation equations at the free grid points with the
Dirichlet values eliminated), solved by GMRES preconditioned by the direct solve.
Solvers return their stats (``SolveStats``).
"""

from gpbayes.linalg.kronsum import KronSum, KronSumSolver, SolveStats

__all__ = ["KronSum", "KronSumSolver", "SolveStats"]
