"""Stage `fit_codebook`: k-means over the sampled patches (`codebook.method`: MiniBatchKMeans or
full-batch Lloyd), and the codebook's quantization metrics."""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

from pathlib import Path

from videolm.codes.codebook import Codebook
from videolm.codes.patches import PatchSample
from videolm.device import resolve_device
from videolm.io import guard_outputs, write_json
from videolm.stage import run_stage


def main(params) -> str:
    metrics_path = Path(params.paths.metrics) / "codebook.json"
    guard_outputs("fit_codebook", {"paths.patches": params.paths.patches},
                  {"paths.codebook": params.paths.codebook, "paths.metrics": metrics_path})
    sample = PatchSample.load(params.paths.patches)
    codebook = Codebook.fit(sample, params.codebook, params.seed, resolve_device(params.device))
    codebook.save(params.paths.codebook)
    metrics = codebook.quality(sample)
    write_json(metrics_path, metrics, "fit_codebook")
    return f"k={codebook.k} ({params.codebook.method}), held-out PSNR {metrics['heldout_psnr']:.2f} dB"


if __name__ == "__main__":
    run_stage(main)
