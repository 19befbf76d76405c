"""Stage `fit_codebook`: MiniBatchKMeans over the sampled patches, and its quantization metrics."""

from pathlib import Path

import h5py
import numpy as np

from videolm.cli import run_stage
from videolm.codebook import assign_codes, codebook_digest, fit_codebook
from videolm.io import atomic_path, create_h5, h5_dataset, write_attrs, write_json
from videolm.metrics import psnr


def main(params) -> None:
    with h5py.File(params.paths.patches, "r") as f:
        train, heldout, std = f["train"][:], f["heldout"][:], float(f.attrs["std"])
        size = int(f.attrs["patch_size"])
    centroids, seconds = fit_codebook(train, params.codebook, params.seed)
    used = np.bincount(assign_codes(train, centroids), minlength=len(centroids)) > 0
    rebuilt = centroids[assign_codes(heldout, centroids)]
    metrics = {"k": len(centroids), "heldout_psnr": psnr(heldout * std, rebuilt * std),
               "unused_centroids": int((~used).sum()), "fit_seconds": round(seconds, 1)}
    with atomic_path(params.paths.codebook) as tmp, create_h5(tmp) as f:
        h5_dataset(f, "centroids", centroids)
        write_attrs(f, {"std": std, "patch_size": size, "digest": codebook_digest(centroids)})
    write_json(Path(params.paths.metrics) / "codebook.json", metrics)
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
