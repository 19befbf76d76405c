"""The figures of README.md and docs/*.md that come from committed outputs, written from those
files: each page holds `cog` blocks that call these functions.

    cog -r -I docs README.md docs/*.md       # rewrite every generated figure from the files
    cog --check -I docs README.md docs/*.md  # fail where a page's figure differs (tests/test_docs.py)

Paths are relative to the project root, where cog runs.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

METHODS = {  # plots/horizon/<file>.json -> the name a table gives it
    "model": "model", "model_pixels": "model_pixels", "pixels_without_model": "pixels_without_model",
    "copy_last": "copy last", "copy_last_codes": "copy last (codes)", "flow": "flow", "codebook": "codebook (ceiling)"}
TIME_MARGIN = 0.2  # the models table: a row within this share of the default's training time is within its budget


@cache
def metrics(name: str) -> dict:
    """metrics/<name>.json."""
    return json.loads(Path(f"metrics/{name}.json").read_text())


@cache
def horizon(method: str) -> dict[int, dict]:
    """plots/horizon/<method>.json: horizon -> its measures."""
    return {row["horizon"]: row for row in json.loads(Path(f"plots/horizon/{method}.json").read_text())}


def gaps(method: str, baseline: str, measure: str = "psnr_moving") -> list[float]:
    """`method`'s `measure` minus `baseline`'s at every horizon."""
    return [horizon(method)[h][measure] - horizon(baseline)[h][measure] for h in horizon(method)]


def table(header: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def readme_results() -> str:
    """The README's results table: perplexity from metrics/eval.json, moving-pixel PSNR at
    horizons 1, 5 and 10 from plots/horizon/."""
    e = metrics("eval")

    def psnr(method: str) -> list[str]:
        return [f"{horizon(method)[h]['psnr_moving']:.2f}" for h in (1, 5, 10)]

    copy_ratio = e["copy_previous_perplexity"] / e["copy_previous_perplexity"]
    unigram_ratio = e["unigram_perplexity"] / e["copy_previous_perplexity"]
    return table(["method", "test perplexity", "× copy-previous", "moving PSNR h1 (dB)", "h5", "h10"], [
        ["rCNN (perplexity of its codes; PSNR of its pixel decoder's frames)", f"**{e['model_perplexity']:.2f}**",
         f"**{e['model_vs_copy_previous_perplexity']:.3f}**", *(f"**{v}**" for v in psnr("model_pixels"))],
        ["copy the previous frame (its codes; its pixels)", f"{e['copy_previous_perplexity']:.2f}",
         f"{copy_ratio:.3f}", *psnr("copy_last")],
        ["unigram over codes", f"{e['unigram_perplexity']:.2f}", f"{unigram_ratio:.1f}", "—", "—", "—"],
        ["constant optical flow (Farneback)", "—", "—", *psnr("flow")]])


def readme_pixels() -> str:
    """The README's sentences on the decoder against copying and flow, and the model's share."""
    e = metrics("eval")
    copy, flow, share = (gaps("model_pixels", b) for b in ("copy_last", "flow", "pixels_without_model"))
    fills = {b: e["fill_psnr_moving_model_pixels"] - e[f"fill_psnr_moving_{b}"] for b in ("average", "flow")}
    above = [h for h, gap in zip(horizon("flow"), flow) if gap > 0]
    return (f"In likelihood the rCNN is far ahead of both baselines. In pixels its decoder, which reads the\n"
            f"model's predictions and the real frames' motion (optical flow among it), is above copying the\n"
            f"last frame by {min(copy):.1f} to {max(copy):.1f} dB at every horizon, and above optical flow alone "
            f"at {len(above)} of {len(flow)}\nhorizons ({min(flow):+.2f} to {max(flow):+.2f} dB). "
            f"**The language model's share of those pixels is small**: against the same decoder\ntrained "
            f"without the model's inputs, the model adds {min(share):+.2f} to {max(share):+.2f} dB at each horizon "
            f"({sum(share) / len(share):+.2f} dB on\naverage over h1..h{len(share)}). "
            f"It fills a missing frame {fills['average']:+.2f} dB against the neighbours' mean and "
            f"{fills['flow']:+.2f} dB\nagainst flow interpolation (moving pixels).")


def likelihood() -> str:
    """docs/results.md's likelihood and codebook figures."""
    e, t, c, q = metrics("eval"), metrics("train"), metrics("codebook"), metrics("encode")
    return "\n".join([
        f"- Bits per test patch (`metrics/eval.json`): rCNN {e['model_bits_per_patch']:.3f}, copy previous code "
        f"{e['copy_previous_bits_per_patch']:.3f}, unigram {e['unigram_bits_per_patch']:.3f}.",
        f"- rCNN validation perplexity of the kept epoch {t['val_perplexity']:.3f} (epoch {t['best_epoch']} of "
        f"{t['epochs_run']}); {t['parameters']:,} parameters\n  (`metrics/train.json`).",
        f"- Codebook (`metrics/codebook.json`): held-out patch PSNR {c['heldout_psnr']:.2f} dB, "
        f"{c['unused_centroids'] or 'no'} unused centroid{'' if c['unused_centroids'] == 1 else 's'}.\n  Frames rebuilt "
        f"from their codes (`metrics/encode.json`): {q['quantization_psnr']:.2f} dB over all frames, "
        f"{q['quantization_psnr_test']:.2f} dB over the test frames. That is the\n  ceiling of every code-based "
        "prediction.",
        f"- 1-step PSNR on all test frames, given the full history: the model's argmax codes decoded\n"
        f"  {e['psnr_1step_model']:.2f} dB, copying the last frame's pixels {e['psnr_1step_copy_last']:.2f} dB, "
        f"the true codes decoded {e['psnr_1step_codebook']:.2f} dB (the ceiling above)."])


def generation() -> str:
    """docs/results.md's generation table: every measure but moving PSNR at horizons 1, 5 and 10."""
    measures = ["psnr", "ssim", "ssim_moving", "sharpness", "sharpness_moving"]
    return table(["horizon", "measure", *METHODS.values()],
                 [[h, m, *(f"{horizon(f)[h][m]:.3f}" if m.startswith("ssim") else f"{horizon(f)[h][m]:.2f}"
                           for f in METHODS)] for h in (1, 5, 10) for m in measures])


def moving_psnr() -> str:
    """docs/results.md's moving-pixel PSNR at every horizon, the README's cells marked."""
    readme = {"model_pixels", "copy_last", "flow"}
    return table(["horizon", *METHODS.values()],
                 [[h, *("README" if f in readme and h in (1, 5, 10) else f"{horizon(f)[h]['psnr_moving']:.2f}"
                        for f in METHODS)] for h in horizon("model")])


def filling() -> str:
    """docs/results.md's filling table, from metrics/eval.json's fill_* keys."""
    e = metrics("eval")
    names = {"model": "model (codes, joint likelihood)", "model_forward": "model_forward (codes, no t+1)",
             "model_pixels": "model_pixels (decoder, both neighbours, flow)",
             "pixels_without_model": "pixels_without_model (the decoder without the model)", "average": "average",
             "flow": "flow", "codebook": "codebook"}
    measures = [("psnr", ".2f"), ("psnr_moving", ".2f"), ("ssim", ".3f"), ("ssim_moving", ".3f"),
                ("sharpness", ".2f"), ("sharpness_moving", ".2f"), ("blockiness", ".3f")]
    return table(["filling", "PSNR", "PSNR moving", "SSIM", "SSIM moving", "sharpness", "sharpness moving",
                  "blockiness"],
                 [[label, *(format(e[f"fill_{m}_{name}"], spec) for m, spec in measures)]
                  for name, label in names.items()]
                 + [["truth", *[""] * 6, f"{e['fill_blockiness_truth']:.3f}"]])


def blockiness() -> str:
    """docs/results.md's blockiness per method at horizons 1, 5 and 10, the truth's beside."""
    e = metrics("eval")
    truth = [f"{e['gen_blockiness_truth_h1']:.3f}", "", "", f"{e['gen_blockiness_truth_mean']:.3f}"]
    return table(["blockiness", "h1", "h5", "h10", "mean h1..h10"],
                 [[label, *(f"{horizon(f)[h]['blockiness']:.3f}" for h in (1, 5, 10)),
                   f"{e[f'gen_blockiness_{f}_mean']:.3f}"] for f, label in METHODS.items()] + [["truth", *truth]])


def model_share() -> str:
    """docs/results.md's table of the model's share: the decoder against itself without the model."""
    e = metrics("eval")
    share = gaps("model_pixels", "pixels_without_model")
    rows = [[label, *(f"{horizon(f)[h]['psnr_moving']:.2f}" for h in horizon(f)),
             f"{e[f'gen_psnr_moving_{f}_mean']:.2f}", f"{e[f'fill_psnr_moving_{fill}']:.2f}"]
            for f, fill, label in (("model_pixels", "model_pixels", "the decoder"),
                                   ("pixels_without_model", "pixels_without_model", "the decoder without the model"),
                                   ("flow", "flow", "optical flow (filling: interpolation)"),
                                   ("copy_last", "average", "copy-last (filling: the neighbours' mean)"))]
    rows.append(["**the model's share**", *(f"**{s:+.2f}**" for s in share), f"**{sum(share) / len(share):+.2f}**",
                 f"**{e['fill_model_share_psnr_moving']:+.2f}**"])
    return table(["moving PSNR (dB)", *(f"h{h}" for h in horizon("flow")), "mean", "filling"], rows)


def heldout() -> str:
    """benchmarks/RESULTS-heldout.md's tables, as `python benchmarks/heldout.py` wrote them."""
    return Path("benchmarks/RESULTS-heldout.md").read_text().split("\n", 2)[2].strip()


def decoder_gains() -> str:
    """docs/results.md's summary of the pixel decoder on the default data."""
    copy, codes, flow = (gaps("model_pixels", b) for b in ("copy_last", "model", "flow"))
    e = metrics("eval")
    at = {h: i for i, h in enumerate(horizon("flow"))}
    above = [str(h) for h in horizon("flow") if flow[at[h]] > 0]
    return (f"The decoder's frames are above copy-last on moving pixels at every horizon, by {copy[at[1]]:.2f} dB at h1, "
            f"{copy[at[5]]:.2f} at h5 and {copy[at[10]]:.2f} at h10\n({min(copy):.2f} to {max(copy):.2f} over the "
            f"{len(copy)}), above the decoded codes by {min(codes):.2f} to {max(codes):.2f} dB, and above constant optical "
            f"flow at horizons {', '.join(above)}\n({flow[at[1]]:+.2f} dB at h1, {flow[at[5]]:+.2f} at h5, "
            f"{flow[at[10]]:+.2f} at h10). Filling, it is "
            f"{e['fill_psnr_moving_model_pixels'] - e['fill_psnr_moving_average']:+.2f} dB against the neighbours' mean "
            f"on moving pixels\n({e['fill_psnr_moving_model_pixels']:.2f} against {e['fill_psnr_moving_average']:.2f}) "
            f"and {e['fill_psnr_model_pixels'] - e['fill_psnr_average']:+.2f} dB on the full frame "
            f"({e['fill_psnr_model_pixels']:.2f} against {e['fill_psnr_average']:.2f}).")


@cache
def model_rows() -> dict[str, dict]:
    """benchmarks/RESULTS-models.json: the models table's rows by variant, as `benchmarks/models.py` wrote them."""
    return json.loads(Path("benchmarks/RESULTS-models.json").read_text())


def readme_models() -> str:
    """The README's sentence on the transformer and the rNN against the default rCNN, from
    benchmarks/RESULTS-models.json: at the default's training time, and at the transformer's own budget."""
    rows = model_rows()
    default, at_time, longer = rows["rcnn"], rows["transformer-time"], rows["transformer"]
    rnn = min((r for name, r in rows.items() if name.startswith("rnn")), key=lambda r: r["val_perplexity"])
    ahead = lambda r: "leads" if r["val_perplexity"] < default["val_perplexity"] else "trails"
    return (f"A space-time transformer over the same codes (`model.name=transformer`) {ahead(at_time)} the default "
            f"rCNN on validation at the rCNN's training time ({at_time['val_perplexity']:.3f} against "
            f"{default['val_perplexity']:.3f}, on one {default['cpu']}), so the rCNN stays the default; given "
            f"{longer['train_seconds'] / default['train_seconds']:.2f}x that time it {ahead(longer)} "
            f"({longer['val_perplexity']:.3f}), and its test perplexity is {longer['x_copy']:.3f}x copy-previous "
            f"against the rCNN's {default['x_copy']:.3f}x. The rNN {ahead(rnn)} the rCNN at its best "
            f"({rnn['val_perplexity']:.3f}; [the models](docs/results.md#the-models-on-one-budget)).")


def models() -> str:
    """benchmarks/RESULTS-models.md's table, as `python benchmarks/models.py` wrote it, and how
    far each model's validation perplexity is from the best's, at what training time (as a
    ratio to the default's where both ran on one CPU)."""
    rows = model_rows()
    default = rows["rcnn"]
    best = min(rows.values(), key=lambda r: r["val_perplexity"])
    others = sorted((r for r in rows.values() if r is not best), key=lambda r: r["val_perplexity"])
    took = lambda r: (f"{r['train_seconds'] / default['train_seconds']:.2f}x the default's time"
                      if r["cpu"] == default["cpu"] else f"{r['train_seconds']} s on the {r['cpu']}")
    verdict = (f"The best validation perplexity is {best['val_perplexity']:.3f}, by the {best['what']} in "
               f"{best['train_seconds']} s of training steps on the {best['cpu']}; "
               + "; ".join(f"{r['val_perplexity'] / best['val_perplexity'] - 1:.1%} higher: the {r['what']} "
                           f"({r['val_perplexity']:.3f}, in {took(r)})" for r in others) + ".")
    in_time = [r for r in rows.values() if r["cpu"] == default["cpu"]
               and abs(r["train_seconds"] / default["train_seconds"] - 1) <= TIME_MARGIN]
    fastest = min(in_time, key=lambda r: r["val_perplexity"])
    rule = (f"Within the default's training time (±{TIME_MARGIN:.0%}: {default['train_seconds'] * (1 - TIME_MARGIN):.0f} "
            f"to {default['train_seconds'] * (1 + TIME_MARGIN):.0f} s on the {default['cpu']}) the best on validation is "
            + ("the default." if fastest is default else
               f"the {fastest['what']}, {1 - fastest['val_perplexity'] / default['val_perplexity']:.1%} under the "
               f"default's."))
    return Path("benchmarks/RESULTS-models.md").read_text().split("\n", 2)[2].strip() + "\n\n" + verdict + " " + rule
