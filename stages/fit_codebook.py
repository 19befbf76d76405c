"""Stage `fit_codebook`: MiniBatchKMeans over the sampled patches, and its quantization metrics.

The fit's wall-clock time is printed, not stored: tracked outputs hold only what the same
inputs reproduce byte for byte.
"""

import time
from pathlib import Path

from videolm.codes.codebook import Codebook
from videolm.codes.patches import PatchSample
from videolm.io import guard_outputs, write_json
from videolm.stage import run_stage


def main(params) -> None:
    metrics_path = Path(params.paths.metrics) / "codebook.json"
    guard_outputs("fit_codebook", {"paths.patches": params.paths.patches},
                  {"paths.codebook": params.paths.codebook, "paths.metrics": metrics_path})
    sample = PatchSample.load(params.paths.patches)
    start = time.perf_counter()
    codebook = Codebook.fit(sample, params.codebook, params.seed)
    seconds = time.perf_counter() - start
    codebook.save(params.paths.codebook)
    metrics = codebook.quality(sample)
    write_json(metrics_path, metrics, "fit_codebook")
    print(f"fit_codebook: k={codebook.k} in {seconds:.1f} s, held-out PSNR {metrics['heldout_psnr']:.2f} dB")


if __name__ == "__main__":
    run_stage(main)
