"""Code grids: encoding frames to centroid indices, storing them in HDF5, reading them back.

`codes/<video_id>.h5` holds `codes` uint16 (T, rows, cols) and, as attributes, the
video's source and split and the codebook it was encoded with (k, patch size, stride,
digest), so that a reader can refuse a stale pairing instead of training on garbage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from videolm.codebook import assign_codes
from videolm.errors import VideoLMError
from videolm.io import create_h5, h5_dataset, h5_files, write_attrs
from videolm.patches import extract_patches, reconstruct

if TYPE_CHECKING:  # only a type: encoding needs no video decoding code
    from videolm.frames import VideoFrames


class CodesError(VideoLMError):
    """Code grids are missing, malformed or do not match the codebook."""


@dataclass
class Codebook:
    centroids: np.ndarray  # (k, size*size) float32, in units of gray / std
    std: float
    size: int
    digest: str

    @property
    def k(self) -> int:
        return len(self.centroids)

    def atoms(self) -> np.ndarray:
        """(k, size, size) centroids in gray levels."""
        return (self.centroids * self.std).reshape(self.k, self.size, self.size)

    def mirror_map(self) -> np.ndarray:
        """(k,) index of the code nearest to each centroid mirrored left-right."""
        flipped = self.centroids.reshape(self.k, self.size, self.size)[:, :, ::-1].reshape(self.k, -1)
        return assign_codes(flipped, self.centroids)

    def decode(self, codes: np.ndarray, stride: int) -> np.ndarray:
        """(N, rows, cols) codes -> (N, H, W) float gray frames, overlaps averaged."""
        return reconstruct(self.centroids[codes] * self.std, self.size, stride)


def load_codebook(path: str | Path) -> Codebook:
    path = Path(path)
    if not path.is_file():
        raise CodesError(f"{path}: codebook not found (run the fit_codebook stage first)")
    with h5py.File(path, "r") as f:
        a = f.attrs
        return Codebook(f["centroids"][:], float(a["std"]), int(a["patch_size"]), str(a["digest"]))


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


def encode_video(video: VideoFrames, codebook: Codebook, stride: int, chunk_frames: int,
                 out_path: Path) -> tuple[float, int, float, int]:
    """Encode one video's frames to `out_path`, chunk by chunk.

    Returns the squared error and pixel count of the frames rebuilt from their codes, over
    all frames and over test frames, so the caller can report quantization PSNR.
    """
    size = codebook.size
    sq_all = sq_test = 0.0
    n_all = n_test = 0
    with create_h5(out_path) as f:
        dset = None
        for start in range(0, video.n_frames, chunk_frames):
            frames = video.read(start, start + chunk_frames)  # (n, H, W) uint8
            patches = extract_patches(frames, size, stride)  # (n, rows, cols, size*size)
            n, rows, cols, dim = patches.shape
            codes = assign_codes(patches.reshape(-1, dim) / codebook.std, codebook.centroids)
            codes = codes.reshape(n, rows, cols).astype(np.uint16)
            if dset is None:
                dset = h5_dataset(f, "codes", shape=(video.n_frames, rows, cols), dtype=np.uint16,
                                  chunks=(1, rows, cols), compression="lzf")
            dset[start:start + n] = codes
            rebuilt = codebook.decode(codes, stride)
            err = ((frames[:, :rebuilt.shape[1], :rebuilt.shape[2]].astype(np.float32) - rebuilt) ** 2)
            err = err.reshape(n, -1).sum(1)
            is_test = np.arange(start, start + n) >= video.val_end
            sq_all += float(err.sum())
            sq_test += float(err[is_test].sum())
            n_all += n * rebuilt[0].size
            n_test += int(is_test.sum()) * rebuilt[0].size
        write_attrs(f, {"source": video.source, "train_end": video.train_end, "val_end": video.val_end,
                        "k": codebook.k, "patch_size": size, "stride": stride, "codebook": codebook.digest})
    return sq_all, n_all, sq_test, n_test


def load_code_grids(codes_dir: str | Path, codebook: Codebook | None = None) -> list[CodeGrid]:
    """All code grids of an `encode` output folder, checked against `codebook` if given."""
    grids = []
    for path in h5_files(codes_dir, "code grids", "encode"):
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
            grids.append(CodeGrid(path.stem, codes, int(a["train_end"]), int(a["val_end"])))
    return grids
