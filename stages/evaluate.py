"""Stage `evaluate`: test perplexity of the model and the baselines, 1-step PSNR, a picture strip."""

from functools import lru_cache
from pathlib import Path

from videolm.baselines import fit_baselines
from videolm.cli import run_stage
from videolm.codes import load_code_grids, load_codebook
from videolm.errors import VideoLMError
from videolm.evaluate import evaluate
from videolm.frames import list_frames
from videolm.generate import extrapolate
from videolm.io import write_json
from videolm.models import load_model
from videolm.pictures import frame_grid, save_png


def main(params) -> None:
    codebook = load_codebook(params.paths.codebook)
    grids = load_code_grids(params.paths.codes, codebook)
    model = load_model(params.paths.model, codebook)
    videos = {v.video_id: v for v in list_frames(params.paths.frames)}
    read_frames = lru_cache(maxsize=1)(lambda video_id: videos[video_id].read())
    baselines = fit_baselines(grids, codebook.k)
    metrics = evaluate(model, grids, read_frames, codebook, baselines, params.patches.stride)
    write_json(Path(params.paths.metrics) / "eval.json", metrics)
    print(metrics)

    e = params.eval
    rows = []
    for grid in grids:
        t0 = max(grid.val_end, e.context)
        if len(rows) == e.n_pictures or t0 + e.horizon > len(grid.codes):
            continue
        frames = read_frames(grid.video_id)
        predicted = codebook.decode(extrapolate(model, grid.codes, t0, e.horizon), params.patches.stride)
        h, w = predicted.shape[1:]
        rows.append([f[:h, :w] for f in frames[t0 - e.context:t0 + e.horizon]] + list(predicted))
    if not rows:
        raise VideoLMError(f"no test clip has eval.context={e.context} frames before and "
                           f"eval.horizon={e.horizon} after its first test frame")
    save_png(Path(params.paths.plots) / "predictions.png", frame_grid(rows))


if __name__ == "__main__":
    run_stage(main)
