"""Safe, atomic, deterministic outputs.

- Atomic: every output is written to a temporary path beside its destination and renamed
  into place only when complete, so an interrupted stage never leaves (or lets DVC cache) a
  half-written file. The temporary paths of killed runs (`.<name>.tmp<pid>` whose process is
  gone) are removed by the next run that writes the same output.
- Safe: a stage only ever replaces what it made itself. Each output carries its stage's mark
  (a `.videolm` file in a folder, an attribute of an HDF5 file, a key of a checkpoint, a text
  chunk of a PNG, the comment of a GIF or MP4; `mark_of` reads it); a destination that exists without
  the writing stage's mark is refused with one line, never removed. JSON files (metrics and
  plot rows, small and kept in git) are the one exception: any JSON file may be replaced.
  `guard_outputs` runs these checks for all of a stage's outputs, and refuses outputs that
  overlap its inputs, before any work.
- Deterministic: HDF5 datasets are created without timestamps and compressed with gzip, which
  gives the same bytes for the same array (h5py's bundled LZF does not), and JSON has sorted keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from videolm.errors import VideoLMError

MARK = "videolm_stage"  # the name of the mark in every format
FOLDER_MARK = ".videolm"  # the file holding a folder output's mark
COMPRESSION = {"compression": "gzip", "compression_opts": 1}  # deterministic: the same data, the same bytes


class OutputError(VideoLMError):
    """An output path the stage may not write: it holds something the stage did not make."""


def guard_outputs(stage: str, inputs: dict[str, str | Path], outputs: dict[str, str | Path | list]) -> None:
    """Before any work: no output may overlap an input (be it, or lie inside or around it), nor
    lie inside a folder output of any stage (which that stage replaces whole: say, a shard
    folder inside the frames folder of an unsharded run), and every output that exists must be
    a previous output of `stage`. Keys name the params; an output key may hold a list of paths
    (the files a stage writes into one folder)."""
    for out_key, paths in outputs.items():
        for out in paths if isinstance(paths, list) else [paths]:
            for in_key, source in inputs.items():
                a, b = Path(out).resolve(), Path(source).resolve()
                if a == b or b in a.parents or a in b.parents:
                    raise OutputError(f"{out_key}: {str(out)!r} overlaps the input {in_key}={str(source)!r}: "
                                      f"a stage's outputs must lie outside its inputs (nothing was changed)")
            for folder in Path(out).resolve().parents:
                if mark := mark_of(folder):
                    raise OutputError(f"{out_key}: {str(out)!r} lies inside {str(folder)!r}, the {mark} stage's "
                                      f"output, which it replaces whole: move that folder away or point {out_key} "
                                      f"elsewhere (nothing was changed)")
            check_replaceable(Path(out), stage)


def check_replaceable(path: Path, stage: str) -> None:
    """Refuse a destination that exists and is not `stage`'s output (see the module docstring)."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.suffix == ".json" and path.is_file() and _is_json(path):
        return
    mark = mark_of(path)
    if mark != stage:
        made = f"made by the {mark} stage" if mark else "not made by this pipeline"
        raise OutputError(f"{path}: this {'folder' if path.is_dir() else 'file'} is in the way of the {stage} "
                          f"stage's output and was {made}; move it away or point the output elsewhere "
                          f"(nothing was changed)")


def mark_of(path: Path) -> str | None:
    """The stage that made `path`, read from the mark it carries; None if it has none."""
    if path.is_symlink():
        return None
    try:
        if path.is_dir():
            return json.loads((path / FOLDER_MARK).read_text()).get(MARK)
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return str(f.attrs[MARK]) if MARK in f.attrs else None
        if zipfile.is_zipfile(path):  # a torch checkpoint: a dict with the mark as a key
            import torch
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return checkpoint.get(MARK) if isinstance(checkpoint, dict) else None
        if _is_mp4(path):
            return _mp4_mark(path)
        with Image.open(path) as image:  # PNG text chunk, or GIF comment `videolm_stage=<stage>`
            return image.info.get(MARK) or _mark_in_comment(image.info.get("comment", b"").decode(errors="replace"))
    except (OSError, ValueError, AttributeError, KeyError, RuntimeError, UnidentifiedImageError):
        return None


def _mp4_mark(path: Path) -> str | None:
    """The mark in an MP4's comment `videolm_stage=<stage>`."""
    import av  # only here: the stages that read no video need not load FFmpeg
    try:
        with av.open(str(path)) as container:
            return _mark_in_comment(container.metadata.get("comment", ""))
    except av.error.FFmpegError:
        return None


def _mark_in_comment(comment: str) -> str | None:
    return comment.split("=", 1)[1] if comment.startswith(MARK + "=") else None


def _is_mp4(path: Path) -> bool:
    """An ISO media file (MP4, MOV): its first box is `ftyp`."""
    with open(path, "rb") as f:
        return f.read(8)[4:] == b"ftyp"


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def atomic_path(path: str | Path, stage: str):
    """Yield a temporary path next to `path`; rename it onto `path` when the block succeeds.

    Works for files and folders; a folder is given `stage`'s mark (a file's writer marks it in
    its own format). `path` is replaced only if it is a previous output of `stage`; on an
    exception it is left as it was and the temporary path is removed. A refused write that names
    no file (`Path.write_text`'s, say) is raised naming the temporary path.
    """
    path = Path(path)
    check_replaceable(path, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            (tmp / FOLDER_MARK).write_text(json.dumps({MARK: stage}) + "\n")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # checked above: a folder this stage made
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None:  # a refused write names no file: name the output being written
            raise OSError(err.errno, err.strerror, str(tmp)) from err
        raise
    finally:
        _remove(tmp)


def remove_stale_temporaries(path: Path) -> None:
    """Remove the `.<name>.tmp<pid>` beside `path` left by runs whose process is gone."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data, stage: str) -> None:
    with atomic_path(path, stage) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class _NeverFailingFile:
    """The file HDF5 writes through (h5py's file-object driver), which never fails a write.

    HDF5 is not safe when a write fails (a full disk, a file-size limit): it can crash while
    closing the file. So the first `OSError` of a write is kept, and that write and every later
    one are dropped but reported as done; `h5_writer` raises the error once HDF5 has closed the
    file. Writes go straight to the file descriptor (no buffer), so an error is seen at once."""

    def __init__(self, path: Path, mode: str):
        self.path = path
        self.file = open(path, mode, buffering=0)
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while self.error is None and view:
                view = view[self.file.write(view):]
        except OSError as err:
            self._refused(err)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.file.truncate(size)
            except OSError as err:
                self._refused(err)
        return size if size is not None else self.file.tell()

    def _refused(self, err: OSError) -> None:
        self.error = OSError(err.errno, err.strerror, str(self.path))

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def h5_writer(path: str | Path, mode: str = "w"):
    """An HDF5 file opened for writing (`mode` "w": a new file; "r+": an existing one), closed at
    the end of the block; use `h5_dataset` to add data without timestamps. A write the file
    system refuses (no space left, a file-size limit) is raised as that `OSError`, naming `path`,
    after HDF5 has closed the file: HDF5 itself never meets a failing write (`_NeverFailingFile`).
    The file-object driver lays a file out a little otherwise than h5py's default driver (the
    same data; the same bytes on every run)."""
    sink = _NeverFailingFile(Path(path), "w+b" if mode == "w" else "r+b")
    try:
        with h5py.File(sink, mode, libver="earliest", track_order=False) as f:
            yield f
    except Exception:
        if sink.error is None:
            raise
    finally:
        sink.file.close()
    if sink.error is not None:
        raise sink.error


def h5_dataset(f: h5py.File, name: str, data=None, **kwargs) -> h5py.Dataset:
    """Create a dataset with no modification times, so identical data gives identical bytes."""
    return f.create_dataset(name, data=data, track_times=False, **kwargs)


def save_h5(path: str | Path, stage: str, datasets: dict[str, np.ndarray], attrs: dict) -> None:
    """A single-file HDF5 output: `datasets` and `attrs`, with `stage`'s mark, written atomically."""
    with atomic_path(path, stage) as tmp, h5_writer(tmp) as f:
        for name, data in datasets.items():
            h5_dataset(f, name, data)
        write_attrs(f, {**attrs, MARK: stage})


def load_h5(path: str | Path, what: str, stage: str) -> tuple[dict[str, np.ndarray], dict]:
    """(datasets, attributes) of a single-file HDF5 output; an error naming the stage if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise VideoLMError(f"{path}: {what} not found (run the {stage} stage first)")
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in f}, dict(f.attrs)


def h5_files(folder: str | Path, what: str, stage: str) -> list[Path]:
    """The HDF5 files of a stage's output folder, sorted by name; an error naming the stage if none.

    The folder may instead hold the outputs of a sharded run of the stage (`shard.count` > 1,
    docs/scale-out.md "Across machines"), one sub-folder per shard: their files are read together, in
    the order one unsharded folder gives, and only once every shard of one run is there (a
    missing, doubled or stale shard is an error, never part of the data). Other sub-folders,
    and `.`-folders (the temporaries of a run under way), are not read, as before.
    """
    folder = Path(folder)
    paths = sorted(folder.glob("*.h5"))
    shards = shard_folders(folder, stage)
    if shards:
        if paths:
            raise VideoLMError(f"{folder}: holds both {what} and shard folders of the {stage} stage "
                               f"({', '.join(s.name for s in shards)}): read one layout or the other")
        paths = sorted((p for shard in shards for p in shard.glob("*.h5")), key=lambda p: p.name)
        doubled = sorted(name for name, n in Counter(p.name for p in paths).items() if n > 1)
        if doubled:
            raise VideoLMError(f"{folder}: {doubled[0]} is in more than one shard folder")
    if not paths:
        raise VideoLMError(f"{folder}: no {what} (run the {stage} stage first)")
    return paths


SHARD_FILE = "shard.json"  # in a shard output folder: its ShardRecord


@dataclass(frozen=True)
class ShardRecord:
    """What a shard output folder is: shard `index` of `count`, cut from the set of videos that
    `of` identifies (a digest all the shards of one run share)."""

    index: int
    count: int
    of: str


def write_shard_record(folder: str | Path, record: ShardRecord, stage: str) -> None:
    write_json(Path(folder) / SHARD_FILE, asdict(record), stage)


def read_shard_record(folder: str | Path) -> ShardRecord | None:
    """The record of a shard output folder; None for any other folder."""
    path = Path(folder) / SHARD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return ShardRecord(int(data["index"]), int(data["count"]), str(data["of"]))
    except (ValueError, KeyError, TypeError):
        raise VideoLMError(f"{path}: not a shard record (expected index, count and of)") from None


def shard_folders(folder: str | Path, stage: str) -> list[Path]:
    """The shard output folders of `stage` directly inside `folder` (none for an unsharded
    output), checked to be every shard of one run: the same `count` and `of`, each index once."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    subs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and mark_of(d) == stage)
    records = {}
    for sub in subs:
        record = read_shard_record(sub)
        if record is None:
            raise VideoLMError(f"{sub}: an output of the {stage} stage without a shard record, inside {folder}: "
                               f"move it away, or read it on its own")
        records[sub] = record
    if not records:
        return []
    found = ", ".join(f"{sub.name}: shard {r.index} of {r.count}" for sub, r in records.items())
    if len({r.count for r in records.values()}) > 1:
        raise VideoLMError(f"{folder}: its shards were made with different shard.count ({found}): rerun them all "
                           f"with one")
    if len({r.of for r in records.values()}) > 1:
        raise VideoLMError(f"{folder}: its shards were cut from different videos or params ({found}): rerun the "
                           f"stale ones (dvc repro)")
    indices = sorted(r.index for r in records.values())
    count = next(iter(records.values())).count
    if len(set(indices)) < len(indices):
        raise VideoLMError(f"{folder}: a shard is there twice ({found})")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise VideoLMError(f"{folder}: shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of "
                           f"{count} missing (found {found}): run or pull {stage}@{missing[0]} first")
    return subs


def write_attrs(obj, attrs: dict) -> None:
    for key, value in sorted(attrs.items()):
        obj.attrs[key] = np.asarray(value) if isinstance(value, (list, tuple)) else value
