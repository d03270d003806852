"""BLAS threads for small CPUs. jax's CPU linear algebra (Cholesky, QR, triangular solves)
runs in scipy's OpenBLAS, whose thread pool contends with XLA's on a few cores: 4-5x slower
on 2 cores (benchmarks/journal.md). The command line and the examples call
``limit_blas_threads()``; a program that imports gpbayes may call it too, or start Python
with OPENBLAS_NUM_THREADS=1.
"""

import os

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(threads: int = 1) -> bool:
    """Limit the loaded BLAS libraries to ``threads`` threads, unless the environment sets a
    thread count itself (the user's setting wins). Returns whether it limited them."""
    if any(k in os.environ for k in BLAS_ENV):
        return False
    import scipy.linalg  # noqa: F401  (loads the OpenBLAS that jax's kernels call)
    import threadpoolctl

    threadpoolctl.threadpool_limits(threads, user_api="blas")
    return True
