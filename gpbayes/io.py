"""Files: atomic writes (readers never see half a file), JSON, netCDF groups and the ArviZ
import.
It imports nothing of gpbayes, so any module may use it.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path), then rename tmp_path to path: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: object) -> None:
    """``data`` as indented JSON, atomically."""
    import json

    write_atomic(path, lambda f: f.write_text(json.dumps(data, indent=2)))


def write_groups(path: str | Path, groups: dict) -> None:
    """xarray Datasets as the groups of one netCDF file (h5netcdf, zlib), the layout of
    ArviZ's ``InferenceData.to_netcdf``: ``arviz.from_netcdf`` reads it back. Written
    without importing arviz (a second of a solve's start-up)."""
    mode = "w"
    for name, data in groups.items():
        encoding = {k: {"zlib": True} for k, v in data.variables.items()
                    if v.dtype.kind in "biufc"}
        data.to_netcdf(path, mode=mode, group=name, engine="h5netcdf", encoding=encoding)
        mode = "a"


def import_arviz() -> ModuleType:
    """arviz, without its FutureWarning about the coming 1.0 refactor."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz
