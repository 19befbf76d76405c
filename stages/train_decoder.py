"""Stage `train_decoder`: the pixel decoder on top of the trained model (frozen), trained on
the model's own rollouts over training frames; the weights of the best validation loss are kept."""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

from pathlib import Path

from videolm.codes.codebook import Codebook
from videolm.codes.grids import load_code_grids
from videolm.data.frames import list_frames
from videolm.device import resolve_device
from videolm.io import guard_outputs, write_json
from videolm.model.build import load_model
from videolm.model.checkpoint import DecoderCheckpoint, weights_digest
from videolm.stage import run_stage
from videolm.training.decoder import train_decoder


def main(params) -> str:
    metrics_path = Path(params.paths.metrics) / "decoder.json"
    guard_outputs("train_decoder", {key: getattr(params.paths, key) for key in ("model", "codes", "frames", "codebook")},
                  {"paths.decoder": params.paths.decoder, "paths.metrics": metrics_path})
    codebook = Codebook.load(params.paths.codebook)
    grids = load_code_grids(params.paths.codes, codebook)
    model = load_model(params.paths.model, codebook)
    videos = {v.video_id: v for v in list_frames(params.paths.frames)}
    decoder, summary = train_decoder(model, grids, videos, codebook, params.patches.stride, params.decoder,
                                     params.seed, params.eval.motion_threshold, resolve_device(params.device))
    config = params.decoder.model_dump(exclude={"loader_workers"})  # how it ran, not what it is
    DecoderCheckpoint(decoder.state_dict(), config, weights_digest(model), codebook.digest,
                      params.patches.stride).save(params.paths.decoder)
    write_json(metrics_path, summary, "train_decoder")
    return (f"{params.decoder.steps} steps; kept: extrapolation from step {summary['best_step_extrapolate']}, "
            f"filling from step {summary['best_step_fill']}")


if __name__ == "__main__":
    run_stage(main)
