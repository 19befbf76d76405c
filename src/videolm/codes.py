"""Code grids: encoding frames to centroid indices, storing them in HDF5, reading them back.

`CodeGrid` owns the code files (`save`, `load`); `encode_video` makes one from a frames file,
writing it as it goes. Both create the file through `_codes_file`, so its layout is declared once.
`codes/<video_id>.h5` holds `codes` uint16 (T, rows, cols) and, as attributes, the
video's source and split and the codebook it was encoded with (k, patch size, stride,
digest), so that a reader can refuse a stale pairing instead of training on garbage.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import h5py
import numpy as np

from videolm.codebook import Codebook
from videolm.errors import VideoLMError
from videolm.io import COMPRESSION, create_h5, h5_dataset, h5_files, write_attrs
from videolm.patches import extract_patches, grid_shape

if TYPE_CHECKING:  # only a type: encoding needs no video decoding code
    from videolm.frames import VideoFrames


class CodesError(VideoLMError):
    """Code grids are missing, malformed or do not match the codebook."""


@dataclass
class CodeGrid:
    """One video's code grids, in memory."""

    video_id: str
    codes: np.ndarray  # (T, rows, cols) uint16
    train_end: int
    val_end: int

    def part(self, name: str) -> tuple[int, int]:
        """Frame range [start, stop) of 'train', 'val' or 'test'."""
        return {"train": (0, self.train_end), "val": (self.train_end, self.val_end),
                "test": (self.val_end, len(self.codes))}[name]

    def save(self, path: str | Path, codebook: Codebook, stride: int, source: str) -> None:
        """Write the grid, chunked by frame, with the video's source and split and the codebook
        it is encoded with (k, patch size, stride, digest) as attributes."""
        with _codes_file(path, self.codes.shape, codebook, stride, source, self.train_end, self.val_end) as codes:
            codes[...] = self.codes

    @classmethod
    def load(cls, path: str | Path, codebook: Codebook | None = None) -> CodeGrid:
        """Read one code file, checked for shape, type, code range and (if given) the codebook."""
        path = Path(path)
        with h5py.File(path, "r") as f:
            if "codes" not in f or f["codes"].ndim != 3 or f["codes"].dtype != np.uint16:
                raise CodesError(f"{path}: expected a dataset 'codes' of uint16 (T, rows, cols)")
            a = f.attrs
            if codebook is not None and str(a["codebook"]) != codebook.digest:
                raise CodesError(f"{path}: encoded with codebook {a['codebook']}, "
                                 f"not the current one ({codebook.digest}); rerun the encode stage")
            codes = f["codes"][:]
            k = int(a["k"])
            if codes.size and int(codes.max()) >= k:
                raise CodesError(f"{path}: code {int(codes.max())} >= k={k}")
            return cls(path.stem, codes, int(a["train_end"]), int(a["val_end"]))


@contextmanager
def _codes_file(path: str | Path, shape: tuple[int, int, int], codebook: Codebook, stride: int, source: str,
                train_end: int, val_end: int) -> Iterator[h5py.Dataset]:
    """Create a code file and yield its empty `codes` dataset (uint16 `shape`, one chunk per
    frame) for the caller to fill, whole or frame range by frame range; the attributes are
    written when the block ends.

    The chunks are flushed to the file before the attributes are written, as closing the
    dataset did when grids were only written whole: otherwise they would land after the
    attributes, and every code file's bytes (and DVC hash) would change with how it was written.
    """
    with create_h5(path) as f:
        codes = h5_dataset(f, "codes", shape=shape, dtype=np.uint16, chunks=(1, *shape[1:]), **COMPRESSION)
        yield codes
        codes.flush()
        write_attrs(f, {"source": source, "train_end": train_end, "val_end": val_end, "k": codebook.k,
                        "patch_size": codebook.size, "stride": stride, "codebook": codebook.digest})


def encode_video(video: VideoFrames, codebook: Codebook, stride: int, chunk_frames: int,
                 out_path: Path) -> tuple[float, int, float, int]:
    """Encode one video's frames to `out_path`, `chunk_frames` frames at a time: each chunk's
    codes go to the file as soon as they are computed, so memory does not grow with the
    video's length (only one chunk of frames, patches and codes is held).

    Returns the squared error and pixel count of the frames rebuilt from their codes, over
    all frames and over test frames, so the caller can report quantization PSNR.
    """
    height, width = video.frame_shape
    sq_all = sq_test = 0.0
    n_all = n_test = 0
    shape = (video.n_frames, *grid_shape(height, width, codebook.size, stride))
    with _codes_file(out_path, shape, codebook, stride, video.source, video.train_end, video.val_end) as out:
        for start in range(0, video.n_frames, chunk_frames):
            frames = video.read(start, start + chunk_frames)  # (n, H, W) uint8
            patches = extract_patches(frames, codebook.size, stride)  # (n, rows, cols, size*size)
            n, rows, cols, dim = patches.shape
            codes = codebook.assign(patches.reshape(-1, dim)).reshape(n, rows, cols).astype(np.uint16)
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
