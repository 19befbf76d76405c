"""Stage `encode`: every frame of every video to a code grid, and the quantization PSNR.

Of one shard's videos only, reading one shard folder of `extract_frames` or with `shard.count` > 1
(docs/scale-out.md: "Across machines"); the PSNR is then that shard's.
"""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

from pathlib import Path

from videolm.codes.codebook import Codebook
from videolm.codes.encoding import encode_videos, shard_videos
from videolm.data.frames import check_patch_fits, list_frames
from videolm.device import resolve_device
from videolm.image_metrics import psnr_from_mse
from videolm.io import atomic_path, guard_outputs, write_json, write_shard_record
from videolm.stage import run_stage


def main(params) -> str:
    metrics_path = Path(params.paths.metrics) / "encode.json"
    guard_outputs("encode", {"paths.frames": params.paths.frames, "paths.codebook": params.paths.codebook},
                  {"paths.codes": params.paths.codes, "paths.metrics": metrics_path})
    codebook = Codebook.load(params.paths.codebook)
    videos, shard = shard_videos(list_frames(params.paths.frames), params.paths.frames, params.shard)
    check_patch_fits(videos, codebook.size)
    with atomic_path(params.paths.codes, "encode") as tmp:
        tmp.mkdir()
        sq_all, n_all, sq_test, n_test = encode_videos(videos, codebook, params.patches.stride,
                                                       params.encode.chunk_frames, tmp, params.workers,
                                                       str(resolve_device(params.device)))
        if shard:
            write_shard_record(tmp, shard, "encode")
    metrics = {"quantization_psnr": psnr_from_mse(sq_all / n_all),
               "quantization_psnr_test": psnr_from_mse(sq_test / n_test) if n_test else None,
               **({"shard": {"index": shard.index, "count": shard.count}} if shard else {})}
    write_json(metrics_path, metrics, "encode")
    test = metrics["quantization_psnr_test"]
    return (f"{len(videos)} videos encoded, quantization PSNR {metrics['quantization_psnr']:.2f} dB"
            + (f" ({test:.2f} dB on test frames)" if test is not None else "")
            + (f", shard {shard.index} of {shard.count}" if shard else ""))


if __name__ == "__main__":
    run_stage(main)
