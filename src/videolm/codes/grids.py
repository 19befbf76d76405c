"""Code grids: encoding frames to centroid indices, storing them in HDF5, reading them back.

`create_codes_file` is the one writer of a code file (its layout declared once), `CodeGrid.load`
the reader; `encode_video` makes one from a frames file, writing it as it goes.
`encode_frames` is the encoding itself, of frames in memory (`videolm predict` uses it too).
`codes/<video_id>.h5` holds `codes` uint16 (T, rows, cols) and, as attributes, the
video's source and split and the codebook it was encoded with (k, patch size, stride,
digest), so that a reader can refuse a stale pairing instead of training on garbage.

A loaded grid reads its codes lazily (`H5Codes`): training and evaluation read only the
frames and cells they use, so a dataset larger than memory trains (UCF-101 is ~6 GB of codes).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import h5py
import numpy as np
import torch

from videolm.codes.codebook import Codebook
from videolm.codes.patches import extract_patches, grid_shape
from videolm.errors import VideoLMError
from videolm.io import COMPRESSION, h5_dataset, h5_files, h5_writer, write_attrs

if TYPE_CHECKING:  # only a type: encoding needs no video decoding code
    from videolm.data.frames import VideoFrames


class CodesError(VideoLMError):
    """Code grids are missing, malformed or do not match the codebook."""


# Code files each process keeps open. Each costs ~0.6 MB (HDF5's metadata and chunk caches), and
# random crops over thousands of videos rarely hit an open one, so a few are kept: opening one
# takes ~0.2 ms, against ~100 ms for a training step.
OPEN_FILES = 8
_open: OrderedDict[tuple, h5py.File] = OrderedDict()  # by (path, inode, mtime); most recently used last
_open_pid = os.getpid()


class H5Codes:
    """A code file's `codes` (T, rows, cols) uint16, read on demand: `codes[t0:t1, y0:y1]` reads
    only those frames and cells from the file (a numpy array), so nothing is held between reads.

    It holds the path, not an open file, so it can be sent to DataLoader workers; each process
    opens the files it reads itself (a file opened before a fork must not be used after it) and
    keeps the last `OPEN_FILES` open. Reads come from the file as it was when loaded: a file
    replaced since then is an error, and so are codes >= k in what is read.
    """

    dtype = np.dtype(np.uint16)
    ndim = 3

    def __init__(self, path: Path, shape: tuple[int, int, int], k: int):
        self.path, self.shape, self.k = path, shape, k
        stat = path.stat()
        self.key = (path, stat.st_ino, stat.st_mtime_ns)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        out = self._dataset()[index]
        if out.size and int(out.max()) >= self.k:
            raise CodesError(f"{self.path}: code {int(out.max())} >= k={self.k}")
        return out

    def _dataset(self) -> h5py.Dataset:
        """The `codes` dataset, from this process's open files (opened if need be)."""
        global _open_pid
        if _open_pid != os.getpid():  # a forked child: the parent's handles are not ours to use (or close)
            _open.clear()
            _open_pid = os.getpid()
        if self.key in _open:
            _open.move_to_end(self.key)
            return _open[self.key]["codes"]
        stat = self.path.stat()
        if (self.path, stat.st_ino, stat.st_mtime_ns) != self.key:
            raise CodesError(f"{self.path}: the file changed after it was loaded; load the code grids again")
        _open[self.key] = h5py.File(self.path, "r")
        if len(_open) > OPEN_FILES:
            _open.popitem(last=False)[1].close()
        return _open[self.key]["codes"]


@dataclass
class CodeGrid:
    """One video's code grids: in memory (an array), or in its file (`H5Codes`, as loaded)."""

    video_id: str
    codes: np.ndarray | H5Codes  # (T, rows, cols) uint16
    train_end: int
    val_end: int

    def part(self, name: str) -> tuple[int, int]:
        """Frame range [start, stop) of 'train', 'val' or 'test'."""
        return {"train": (0, self.train_end), "val": (self.train_end, self.val_end),
                "test": (self.val_end, len(self.codes))}[name]

    @classmethod
    def load(cls, path: str | Path, codebook: Codebook | None = None) -> CodeGrid:
        """Open one code file, checked for shape, type and (if given) the codebook; its codes are
        read when used (and checked against k then)."""
        path = Path(path)
        with h5py.File(path, "r") as f:
            if "codes" not in f or f["codes"].ndim != 3 or f["codes"].dtype != np.uint16:
                raise CodesError(f"{path}: expected a dataset 'codes' of uint16 (T, rows, cols)")
            a = f.attrs
            if codebook is not None and str(a["codebook"]) != codebook.digest:
                raise CodesError(f"{path}: encoded with codebook {a['codebook']}, "
                                 f"not the current one ({codebook.digest}); rerun the encode stage")
            codes = H5Codes(path, f["codes"].shape, int(a["k"]))
            return cls(path.stem, codes, int(a["train_end"]), int(a["val_end"]))


@contextmanager
def create_codes_file(path: str | Path, shape: tuple[int, int, int], codebook: Codebook, stride: int, source: str,
                train_end: int, val_end: int) -> Iterator[h5py.Dataset]:
    """Create a code file and yield its empty `codes` dataset (uint16 `shape`, one chunk per
    frame) for the caller to fill, whole or frame range by frame range; the attributes are
    written when the block ends.

    The chunks are flushed to the file before the attributes are written, so that a file's
    bytes (and DVC hash) do not depend on whether it was written whole or range by range.
    """
    with h5_writer(path) as f:
        codes = h5_dataset(f, "codes", shape=shape, dtype=np.uint16, chunks=(1, *shape[1:]), **COMPRESSION)
        yield codes
        codes.flush()
        write_attrs(f, {"source": source, "train_end": train_end, "val_end": val_end, "k": codebook.k,
                        "patch_size": codebook.size, "stride": stride, "codebook": codebook.digest})


def encode_frames(frames: np.ndarray, codebook: Codebook, stride: int,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """(n, H, W) gray frames -> (n, rows, cols) uint16 codes: the nearest centroid of each patch
    `stride` pixels apart (the remainder of the frame is cropped), searched on `device`."""
    patches = extract_patches(frames, codebook.size, stride)  # (n, rows, cols, size*size)
    n, rows, cols, dim = patches.shape
    return codebook.assign(patches.reshape(-1, dim), device).reshape(n, rows, cols).astype(np.uint16)


def encode_video(video: VideoFrames, codebook: Codebook, stride: int, chunk_frames: int,
                 out_path: Path, device: torch.device | str = "cpu") -> tuple[float, int, float, int]:
    """Encode one video's frames to `out_path`, `chunk_frames` frames at a time, searching on
    `device` (the same codes on any): each chunk's
    codes go to the file as soon as they are computed, so memory does not grow with the
    video's length (only one chunk of frames, patches and codes is held).

    Returns the squared error and pixel count of the frames rebuilt from their codes, over
    all frames and over test frames, so the caller can report quantization PSNR.
    """
    height, width = video.frame_shape
    sq_all = sq_test = 0.0
    n_all = n_test = 0
    shape = (video.n_frames, *grid_shape(height, width, codebook.size, stride))
    with create_codes_file(out_path, shape, codebook, stride, video.source, video.train_end, video.val_end) as out:
        for start in range(0, video.n_frames, chunk_frames):
            frames = video.read(start, start + chunk_frames)  # (n, H, W) uint8
            codes = encode_frames(frames, codebook, stride, device)
            n = len(codes)
            out[start:start + n] = codes
            rebuilt = codebook.decode(codes, stride)
            err = ((frames[:, :rebuilt.shape[1], :rebuilt.shape[2]].astype(np.float32) - rebuilt) ** 2)
            err = err.reshape(n, -1).sum(1)
            is_test = np.arange(start, start + n) >= video.val_end
            sq_all += float(err.sum())
            sq_test += float(err[is_test].sum())
            n_all += n * rebuilt[0].size
            n_test += int(is_test.sum()) * rebuilt[0].size
    return sq_all, n_all, sq_test, n_test


def load_code_grids(codes_dir: str | Path, codebook: Codebook | None = None) -> list[CodeGrid]:
    """All code grids of an `encode` output folder, checked against `codebook` if given."""
    return [CodeGrid.load(path, codebook) for path in h5_files(codes_dir, "code grids", "encode")]
