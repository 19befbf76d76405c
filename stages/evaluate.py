"""Stage `evaluate`: test perplexity and 1-step PSNR; multi-step generation and frame
filling, by the model's codes and by its pixel decoder, against copy-last, optical-flow and
codebook baselines (PSNR / SSIM / sharpness); pictures."""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

from functools import lru_cache
from pathlib import Path

import torch

from videolm.codes.codebook import Codebook
from videolm.codes.grids import load_code_grids
from videolm.data.frames import list_frames
from videolm.device import resolve_device
from videolm.errors import VideoLMError
from videolm.evaluation.baselines import fit_baselines
from videolm.evaluation.clips import evaluation_clips, picture_clips, subset_clips
from videolm.evaluation.filling import evaluate_filling
from videolm.evaluation.generate import METHODS as GEN_METHODS
from videolm.evaluation.generate import evaluate_generation
from videolm.evaluation.pictures import animation, comparison_grid, entropy_picture, save_gif, save_png
from videolm.evaluation.scoring import score_test
from videolm.image_metrics import as_db
from videolm.io import guard_outputs, write_json
from videolm.model.build import load_model
from videolm.model.pixel_decoder import load_decoder
from videolm.stage import run_stage


def main(params) -> str:
    e, stride = params.eval, params.patches.stride
    metrics_path, plots = Path(params.paths.metrics) / "eval.json", Path(params.paths.plots)
    horizon = {method: plots / "horizon" / f"{method}.json" for method in GEN_METHODS}
    pictures = [plots / name for name in ("predictions.png", "predictions.gif", "entropy.png")]
    guard_outputs("evaluate", {key: getattr(params.paths, key)
                               for key in ("model", "decoder", "decoder_without_model", "codes", "frames",
                                           "codebook")},
                  {"paths.metrics": metrics_path, "paths.plots": [*horizon.values(), *pictures]})
    if e.threads:
        torch.set_num_threads(e.threads)
    codebook = Codebook.load(params.paths.codebook)
    grids = load_code_grids(params.paths.codes, codebook)
    device = resolve_device(params.device)
    model = load_model(params.paths.model, codebook)
    decoders = {name: load_decoder(path, model, codebook, stride).to(device)
                for name, path in (("model_pixels", params.paths.decoder),
                                   ("pixels_without_model", params.paths.decoder_without_model))}
    model.to(device)
    videos = {v.video_id: v for v in list_frames(params.paths.frames)}
    read_frames = lru_cache(maxsize=e.batch_videos)(lambda video_id: videos[video_id].read())
    clips = subset_clips(evaluation_clips(grids, e.context, e.horizon, e.clip_stride), e.clips, params.seed)
    if not clips:
        raise VideoLMError(f"no test clip has eval.context={e.context} + eval.horizon={e.horizon} frames "
                           f"(lower them or raise data.test_fraction)")

    metrics = score_test(model, grids, read_frames, codebook, fit_baselines(grids, codebook.k), stride,
                         e.batch_videos)
    generation = evaluate_generation(model, clips, read_frames, codebook, stride, e.horizon, e.temperature,
                                     e.motion_threshold, params.seed, picture_clips(clips, e.n_pictures), decoders,
                                     e.top_k, e.draws)
    metrics.update(generation.metrics)
    metrics.update(evaluate_filling(model, clips, read_frames, codebook, stride, e.motion_threshold,
                                    e.fill_candidates, e.fill_sweeps, decoders))
    write_json(metrics_path, metrics, "evaluate")

    for method, rows in generation.curves.items():
        write_json(horizon[method], rows, "evaluate")
    save_png(pictures[0], comparison_grid(generation.examples), "evaluate")
    save_gif(pictures[1], animation(generation.examples), "evaluate")
    first = generation.examples[0]
    save_png(pictures[2], entropy_picture(first.truth[first.clip.t0 - first.clip.start],
                                          first.entropy, codebook.size, stride), "evaluate")
    share = metrics.get("gen_model_share_psnr_moving_mean")
    return (f"test perplexity {metrics['model_perplexity']:.4f} (copy-previous "
            f"{metrics['copy_previous_perplexity']:.4f}); "
            f"moving-pixel PSNR at h1: model pixels {as_db(metrics.get('gen_psnr_moving_model_pixels_h1'))}, copy-last "
            f"{as_db(metrics.get('gen_psnr_moving_copy_last_h1'))}, flow {as_db(metrics.get('gen_psnr_moving_flow_h1'))}; "
            f"the model's share over h1..h{e.horizon}: {'n/a' if share is None else f'{share:+.2f} dB'} "
            f"(all in {metrics_path})")


if __name__ == "__main__":
    run_stage(main)
