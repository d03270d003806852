"""JAX's persistent compilation cache, on by default: a second run of the same problem
shape loads its compiled code from disk instead of compiling it again.

The folder is ``$XDG_CACHE_HOME/gpbayes/jax`` (default ``~/.cache/gpbayes/jax``);
``GPBAYES_COMPILATION_CACHE=0`` turns it off, and a folder the user gave jax itself
(``JAX_COMPILATION_CACHE_DIR``) is left as it is.
"""

import os
from pathlib import Path

import jax

MIN_COMPILE_SECONDS = 0.0  # cache every compiled function (entries are small: ~10 kB)


def cache_folder() -> Path | None:
    """The folder the cache goes to, or None when it is off."""
    if os.environ.get("GPBAYES_COMPILATION_CACHE", "1").strip().lower() in ("0", "off", "no",
                                                                             "false"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpbayes" / "jax"


def enable_compilation_cache() -> Path | None:
    """Point jax's persistent compilation cache at ``cache_folder()``; returns it (None:
    off). A folder that cannot be made leaves the cache off (compilation still works)."""
    folder = cache_folder()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
