"""Stage `train_decoder`: the pixel decoder on top of the trained model (frozen), trained on
the model's own rollouts over training frames, each task's weights kept at its best validation
step; then the same decoder without the model's inputs, trained the same way, against which
`evaluate` measures the model's share of the pixels."""

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
                  {"paths.decoder": params.paths.decoder, "paths.decoder_without_model": params.paths.decoder_without_model,
                   "paths.metrics": metrics_path})
    codebook = Codebook.load(params.paths.codebook)
    grids = load_code_grids(params.paths.codes, codebook)
    model = load_model(params.paths.model, codebook)
    videos = {v.video_id: v for v in list_frames(params.paths.frames)}
    config = params.decoder.model_dump(exclude={"loader_workers"})  # how it ran, not what it is
    summaries = {}
    for reads_model, path in ((True, params.paths.decoder), (False, params.paths.decoder_without_model)):
        decoder, summaries[reads_model] = train_decoder(
            model, grids, videos, codebook, params.patches.stride, params.decoder, params.seed,
            params.eval.motion_threshold, resolve_device(params.device), reads_model)
        DecoderCheckpoint(decoder.state_dict(), config, weights_digest(model), codebook.digest,
                          params.patches.stride, reads_model).save(path)
    summary = {**summaries[True], "without_model": summaries[False]}
    write_json(metrics_path, summary, "train_decoder")
    return (f"{params.decoder.steps} steps; kept: extrapolation from step {summary['best_step_extrapolate']}, "
            f"filling from step {summary['best_step_fill']} (without the model: steps "
            f"{summaries[False]['best_step_extrapolate']} and {summaries[False]['best_step_fill']})")


if __name__ == "__main__":
    run_stage(main)
