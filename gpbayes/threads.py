"""CPU settings: BLAS threads for small CPUs, CPU devices for parallel chains, threads for
the MAP's starts.

BLAS threads: jax's CPU linear algebra (Cholesky, QR, triangular solves) runs in scipy's
OpenBLAS, whose thread pool contends with XLA's on a few cores: 4-5x slower on 2 cores
(benchmarks/journal.md). The command line and the examples call
``limit_blas_threads()``; a program that imports gpbayes may call it too, or start
Python with OPENBLAS_NUM_THREADS=1.
"""

import os

from gpbayes.errors import SpecError

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


def cpu_devices(count: int) -> bool:
    """At least ``count`` CPU devices, so NUTS runs that many chains in parallel threads
    (numpyro's chain_method "parallel": 1.6x faster than one after another on 2 cores,
    benchmarks/journal.md). Possible only before JAX's first computation; returns whether
    it took effect (a running backend keeps its devices)."""
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", max(count, jax.config.jax_num_cpu_devices))
    except RuntimeError:
        return False
    return True


WORKERS_ENV = "GPBAYES_START_WORKERS"


def start_workers() -> int:
    """How many of the MAP's starts run at once (one thread each): GPBAYES_START_WORKERS
    if set, else the CPU cores this process may use where JAX runs on the CPU, else 1
    (one accelerator). On 2 cores it gains most where one computation leaves the second
    core idle (1-D, 3-D; XLA already spreads a 2-D grid's products: benchmarks/journal.md)."""
    if WORKERS_ENV in os.environ:
        value = os.environ[WORKERS_ENV]
        if not value.strip().isdigit() or int(value) < 1:
            raise SpecError(f"expected a whole number >= 1, not {value!r}", "environment",
                            WORKERS_ENV)
        return int(value)
    import jax

    if jax.default_backend() != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
