"""Atomic, deterministic outputs.

Every output is written to a temporary path beside its destination and renamed into
place only when complete, so an interrupted stage never leaves (or lets DVC cache) a
half-written file. HDF5 datasets are created without timestamps so that the same inputs
give the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from videolm.errors import VideoLMError


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    Works for files and folders. On an exception the temporary path is removed and
    `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def create_h5(path: str | Path) -> h5py.File:
    """Open a new HDF5 file for writing; use `h5_dataset` to add data without timestamps."""
    return h5py.File(path, "w", libver="earliest", track_order=False)


def h5_dataset(f: h5py.File, name: str, data=None, **kwargs) -> h5py.Dataset:
    """Create a dataset with no modification times, so identical data gives identical bytes."""
    return f.create_dataset(name, data=data, track_times=False, **kwargs)


def h5_files(folder: str | Path, what: str, stage: str) -> list[Path]:
    """The HDF5 files of a stage's output folder, sorted; an error naming the stage if none."""
    paths = sorted(Path(folder).glob("*.h5"))
    if not paths:
        raise VideoLMError(f"{folder}: no {what} (run the {stage} stage first)")
    return paths


def write_attrs(obj, attrs: dict) -> None:
    for key, value in sorted(attrs.items()):
        obj.attrs[key] = np.asarray(value) if isinstance(value, (list, tuple)) else value
