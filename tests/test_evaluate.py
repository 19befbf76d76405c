"""The evaluate stage on a tiny workspace written through the artifacts' own writers: its outputs
are valid, deterministic and exactly those declared in dvc.yaml."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import frames_of, moving_grid, save_grid, tiny_model
from PIL import Image

from videolm.config import DecoderConfig, EvalConfig, Params, PatchesConfig, PathsConfig
from videolm.data.frames import write_frames
from videolm.errors import VideoLMError
from videolm.evaluation.generate import METHODS
from videolm.image_metrics import MEASURES
from videolm.model.checkpoint import Checkpoint, DecoderCheckpoint, weights_digest
from videolm.model.pixel_decoder import PixelDecoder

ROOT = Path(__file__).resolve().parents[1]
SIZE = 4


def write_workspace(root: Path, codebook) -> Params:
    """Frames, codes, codebook and a model checkpoint, tiny, written by the artifacts' owners."""
    grids = [moving_grid(0, "a"), moving_grid(1, "b", n=28)]
    frames = frames_of(codebook, grids)
    paths = PathsConfig(frames=str(root / "data/frames"), codes=str(root / "data/codes"),
                        codebook=str(root / "data/codebook.h5"), model=str(root / "models/model.pt"),
                        decoder=str(root / "models/decoder.pt"),
                        decoder_without_model=str(root / "models/decoder_without_model.pt"),
                        metrics=str(root / "metrics"), plots=str(root / "plots"))
    for folder in (paths.frames, paths.codes):
        Path(folder).mkdir(parents=True)
    for g in grids:
        source = f"{g.video_id}.mp4"
        write_frames(Path(paths.frames) / f"{g.video_id}.h5", iter(frames[g.video_id]),
                     lambda n, g=g: (g.train_end, g.val_end), {"source": source})
        save_grid(g, Path(paths.codes) / f"{g.video_id}.h5", codebook, SIZE, source)
    codebook.save(paths.codebook)
    model = tiny_model(codebook)
    Checkpoint(model.state_dict(), model.cfg.model_dump(), codebook.digest).save(paths.model)
    for reads_model, path in ((True, paths.decoder), (False, paths.decoder_without_model)):
        decoder = PixelDecoder.for_model(DecoderConfig(width=4), model, codebook, SIZE, reads_model)  # untrained: flow
        DecoderCheckpoint(decoder.state_dict(), decoder.cfg.model_dump(), weights_digest(model), codebook.digest,
                          SIZE, reads_model).save(path)
    return Params(paths=paths, patches=PatchesConfig(size=SIZE, stride=SIZE),
                  eval=EvalConfig(context=2, horizon=3, clip_stride=2, n_pictures=2, threads=1))


def run_evaluate_stage(params: Params) -> None:
    spec = importlib.util.spec_from_file_location("evaluate_stage", ROOT / "stages/evaluate.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main(params)


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory, codebook):
    """The evaluate stage run twice on the same tiny workspace: (params, bytes of run 1, of run 2)."""
    root = tmp_path_factory.mktemp("ws")
    params = write_workspace(root, codebook)
    threads = torch.get_num_threads()
    runs = []
    for _ in range(2):
        run_evaluate_stage(params)
        runs.append({p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("[mp]*/**/*"))
                     if p.is_file() and p.suffix != ".pt"})
    torch.set_num_threads(threads)
    return params, runs


def test_stage_outputs_are_valid(stage_outputs):
    _, (files, _) = stage_outputs
    metrics = json.loads(files["metrics/eval.json"])
    for name in ["model_perplexity", "unigram_perplexity", "copy_previous_perplexity", "psnr_1step_model",
                 "gen_psnr_model_h1", "gen_ssim_flow_mean", "fill_psnr_model", "fill_ssim_moving_average"]:
        assert isinstance(metrics[name], float), name
    assert all(not isinstance(v, dict) for v in metrics.values())  # flat
    for method in METHODS:
        rows = json.loads(files[f"plots/horizon/{method}.json"])
        assert [r["horizon"] for r in rows] == [1, 2, 3]
        assert all(isinstance(r[m], float) for r in rows for m in MEASURES)
    assert files["plots/predictions.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert files["plots/entropy.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert files["plots/predictions.gif"][:6] == b"GIF89a"
    with Image.open(io.BytesIO(files["plots/predictions.gif"])) as gif:
        assert gif.n_frames == 2 + 3 and gif.info.get("loop") == 0


def test_stage_outputs_are_deterministic(stage_outputs):
    _, (first, second) = stage_outputs
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_stage_outputs_are_declared_in_dvc_yaml(stage_outputs):
    _, (files, _) = stage_outputs
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    paths = yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]

    def resolve(entry):
        name = next(iter(entry)) if isinstance(entry, dict) else entry
        for key, value in paths.items():
            name = name.replace("${paths.%s}" % key, value)
        return name, (entry[next(iter(entry))] if isinstance(entry, dict) else {}) or {}

    stage = dvc["stages"]["evaluate"]
    declared = {}
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            name, options = resolve(entry)
            declared[name] = (kind, options)
    written = {name.replace("metrics/", paths["metrics"] + "/", 1).replace("plots/", paths["plots"] + "/", 1)
               for name in files}
    assert written == set(declared), "every file the stage writes is declared, nothing else"
    # small JSON files live in git (cache: false); the large pictures live in the DVC cache
    assert all(options.get("cache") is False for kind, options in declared.values() if kind != "plots")
    assert all(options.get("cache", True) is True for kind, options in declared.values() if kind == "plots")
    assert declared[paths["metrics"] + "/eval.json"][0] == "metrics"
    for image in ("predictions.png", "predictions.gif", "entropy.png"):
        assert declared[f"{paths['plots']}/{image}"][0] == "plots"
    # one top-level plot per measure, x = horizon, one line (file) per method
    top = {next(iter(p)): p[next(iter(p))] for p in dvc["plots"]}
    for measure in MEASURES:
        plots = [p for p in top.values() if p.get("x") == "horizon" and set(p["y"].values()) == {measure}]
        assert len(plots) == 1, measure
        assert set(plots[0]["y"]) == {f"{paths['plots']}/horizon/{m}.json" for m in METHODS}


def test_no_clip_long_enough_names_the_keys(tmp_path, codebook):
    params = write_workspace(tmp_path, codebook)
    params.eval.horizon = 20
    with pytest.raises(VideoLMError, match=r"eval\.context=2 \+ eval\.horizon=20"):
        run_evaluate_stage(params)
