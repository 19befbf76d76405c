"""Multi-step evaluation, filling, flow baselines, pictures, and the evaluate stage's
outputs (valid, deterministic, declared in dvc.yaml)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter

from videolm.codebook import codebook_digest
from videolm.codes import Codebook, CodeGrid
from videolm.config import EvalConfig, ModelConfig, Params, PathsConfig, PatchesConfig, as_dict
from videolm.evaluate import (FILL_METHODS, GEN_METHODS, MEASURES, Pool, evaluate_filling, evaluate_generation,
                              picture_clips, evaluation_clips)
from videolm.filling import fill_codes, joint_log_likelihood
from videolm.flow import extrapolate_flow, interpolate_flow
from videolm.metrics import psnr
from videolm.models import build_model
from videolm.pictures import animation, comparison_grid, entropy_picture, upsample_cells

ROOT = Path(__file__).resolve().parents[1]
K, SIZE = 16, 4
T, GH, GW = 30, 6, 8
TRAIN_END, VAL_END = 18, 22


@pytest.fixture(scope="module")
def codebook() -> Codebook:
    centroids = np.random.default_rng(1).uniform(0, 4, (K, SIZE * SIZE)).astype(np.float32)
    return Codebook(centroids, 50.0, SIZE, codebook_digest(centroids))


def moving_grid(seed=0, video_id="clip", n=T) -> CodeGrid:
    base = np.random.default_rng(seed).integers(0, K, (GH, GW))
    codes = np.stack([np.roll(base, t, axis=1) for t in range(n)]).astype(np.uint16)
    return CodeGrid(video_id, codes, TRAIN_END, VAL_END)


def tiny_model(codebook, name="rcnn", layers=1, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(name=name, embed_dim=8, hidden=8, kernel_size=3, input_layers=layers, head="atom")
    return build_model(cfg, codebook).eval()


def smooth_scene(seed=0, shape=(40, 56), shift=(1.0, 2.0), n=4) -> np.ndarray:
    """(n, H, W) float frames of a smooth random texture translating by `shift` (dy, dx) per frame."""
    big = gaussian_filter(np.random.default_rng(seed).uniform(0, 255, (shape[0] + 40, shape[1] + 40)), 3)
    big = (big - big.min()) / (big.max() - big.min()) * 200 + 20
    frames = []
    for t in range(n):
        y, x = 20 - round(shift[0] * t), 20 - round(shift[1] * t)
        frames.append(big[y:y + shape[0], x:x + shape[1]])
    return np.stack(frames)


# ---------------------------------------------------------------- flow baselines


def test_flow_extrapolation_follows_constant_motion():
    frames = smooth_scene(n=5)
    predicted = extrapolate_flow(frames[0], frames[1], 3)
    assert predicted.shape == (3, *frames.shape[1:]) and predicted.dtype == np.float32
    inner = (slice(8, -8), slice(8, -8))  # away from borders the warp cannot fill
    for s in range(3):
        truth = frames[2 + s][inner]
        assert psnr(truth, predicted[s][inner]) > psnr(truth, frames[1][inner]) + 8


def test_flow_interpolation_beats_the_pixel_average_on_motion():
    frames = smooth_scene(shift=(0.0, 3.0), n=3)
    middle = interpolate_flow(frames[0], frames[2])
    inner = (slice(8, -8), slice(8, -8))
    assert psnr(frames[1][inner], middle[inner]) > psnr(frames[1][inner], ((frames[0] + frames[2]) / 2)[inner]) + 5
    still = frames[:1].repeat(2, 0)
    np.testing.assert_allclose(interpolate_flow(still[0], still[1]), still[0], atol=0.5)


# ---------------------------------------------------------------- clips and pooling


def test_test_clips_stay_in_the_test_part():
    grids = [moving_grid(0, "a"), moving_grid(1, "b", n=26)]  # test frames 22..29 and 22..25
    clips = evaluation_clips(grids, context=2, horizon=2)
    assert [(c.grid.video_id, c.start, c.t0) for c in clips] == [("a", 22, 24), ("a", 26, 28), ("b", 22, 24)]
    overlapping = evaluation_clips(grids, context=2, horizon=2, stride=1)
    assert len(overlapping) == 5 + 1
    assert all(c.start >= VAL_END and c.t0 + 2 <= len(c.grid.codes) for c in overlapping)
    assert evaluation_clips(grids, context=5, horizon=5) == []
    assert picture_clips(overlapping, 3) == [0, 5, 1]  # first clip of each video first


def test_pool_results():
    truth = smooth_scene(n=1)[0]
    pool = Pool()
    pool.add(truth, truth, np.zeros(truth.shape, bool))
    assert pool.result() == {"psnr": math.inf, "ssim": pytest.approx(1.0), "psnr_moving": None, "ssim_moving": None}
    pool = Pool()
    moving = np.zeros(truth.shape, bool)
    moving[10:20, 10:30] = True
    pool.add(truth, truth + 5 * moving, moving)  # errors only where moving
    result = pool.result()
    assert result["psnr_moving"] == pytest.approx(20 * math.log10(255 / 5))
    assert result["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / (25 * moving.mean())))


# ---------------------------------------------------------------- generation and filling


def frames_of(codebook, grids):
    """True frames: the codebook's rendering of the codes plus a little seeded noise."""
    rng = np.random.default_rng(7)
    out = {}
    for g in grids:
        clean = codebook.decode(g.codes.astype(np.int64), SIZE)
        out[g.video_id] = np.clip(np.rint(clean + rng.normal(0, 2, clean.shape)), 0, 255).astype(np.uint8)
    return out


def test_generation_metrics_and_curves(codebook):
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    frames = frames_of(codebook, grids)
    model = tiny_model(codebook)
    clips = evaluation_clips(grids, 2, 3, stride=2)
    gen = evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, horizon=3, temperature=0.0,
                              motion_threshold=10, seed=0, pictures=[2, 0])
    names = {"gen_clips", "gen_moving_fraction"} | {f"gen_{m}_{method}_{when}" for m in MEASURES
                                                     for method in GEN_METHODS for when in ("h1", "mean")}
    assert set(gen.metrics) == names
    assert gen.metrics["gen_clips"] == len(clips) == 4
    assert set(gen.curves) == set(GEN_METHODS)
    for rows in gen.curves.values():
        assert [r["horizon"] for r in rows] == [1, 2, 3]
        assert all(set(r) == {"horizon", *MEASURES} for r in rows)
    # the codebook rendering of the true codes is close to the (noisy) truth; copying is not
    assert gen.metrics["gen_psnr_codebook_mean"] > 40 > gen.metrics["gen_psnr_copy_last_mean"]
    assert 0 < gen.metrics["gen_moving_fraction"] < 1
    assert [clips.index(e.clip) for e in gen.examples] == [2, 0]
    assert gen.examples[0].entropy.shape == (GH, GW) and (gen.examples[0].entropy >= 0).all()
    again = evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, 3, 0.0, 10, 0)
    assert again.metrics == gen.metrics


def test_sampling_is_seeded(codebook):
    grids = [moving_grid(0, "a")]
    frames = frames_of(codebook, grids)
    model = tiny_model(codebook)
    clips = evaluation_clips(grids, 2, 3)
    runs = [evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, 3, 1.0, 10, seed).metrics
            for seed in (0, 0, 1)]
    assert runs[0] == runs[1] != runs[2]


@torch.no_grad()
def measured_radius(model, state: torch.Tensor, grid: torch.Tensor) -> int:
    """How far (in code cells, Chebyshev distance) a change of one code at time t reaches
    in the model's prediction for t + 1, measured at the centre of `grid` (H, W)."""
    h, w = grid.shape
    cy, cx = h // 2, w // 2
    changed = grid.clone()
    changed[cy, cx] = (grid[cy, cx] + 1) % model.k
    logits, _, _ = model(torch.stack([grid, changed])[:, None], state.expand(2, *state.shape[1:]))
    moved = (logits[0, 0] != logits[1, 0]).any(-1).nonzero()
    if len(moved) == 0:
        return 0
    return int(torch.maximum((moved[:, 0] - cy).abs(), (moved[:, 1] - cx).abs()).max())


@pytest.mark.parametrize("name,layers,radius", [("rcnn", 1, 1), ("rcnn", 2, 2), ("rnn", 1, 0)])
def test_context_radius_is_how_far_a_code_reaches(codebook, name, layers, radius):
    """Filling relies on `context_radius`: check it against a measurement."""
    model = tiny_model(codebook, name, layers)
    grid = torch.from_numpy(moving_grid().codes[0].astype(np.int64))
    assert model.context_radius == radius
    assert measured_radius(model, torch.zeros(1, 8, GH, GW), grid) == radius


def test_filling_raises_the_joint_likelihood(codebook):
    model = tiny_model(codebook, seed=3)
    codes = moving_grid(2).codes.astype(np.int64)
    before, after = codes[:3], codes[4]
    filled, forward = fill_codes(model, before, after, candidates=4, sweeps=3)
    assert filled.shape == forward.shape == (GH, GW)
    assert joint_log_likelihood(model, before, filled, after) >= joint_log_likelihood(model, before, forward, after)
    same, _ = fill_codes(model, before, after, candidates=4, sweeps=0)
    np.testing.assert_array_equal(same, forward)


def test_filling_is_exact_without_spatial_context(codebook):
    """With 1x1 convolutions every location is on its own: one sweep over all k codes is the
    exact maximizer of log p(c_t) + log p(c_t+1 | c_t), location by location."""
    model = tiny_model(codebook, "rnn", seed=4)
    codes = moving_grid(5).codes.astype(np.int64)
    before, after = codes[:2], codes[3]
    filled, _ = fill_codes(model, before, after, candidates=K, sweeps=1)
    with torch.no_grad():
        logits, _, state = model(torch.from_numpy(before)[None])
        prior = torch.log_softmax(logits[0, -1], -1)  # (H, W, K)
        every = torch.arange(K)[:, None, None].expand(K, GH, GW)  # code c everywhere
        nxt, _, _ = model(every[:, None], state.expand(K, -1, -1, -1))
        ll = torch.log_softmax(nxt[:, 0], -1).gather(-1, torch.from_numpy(after).expand(K, GH, GW)[..., None])[..., 0]
        best = (prior.permute(2, 0, 1) + ll).argmax(0).numpy()
    np.testing.assert_array_equal(filled, best)


def test_filling_metrics(codebook):
    grids = [moving_grid(0, "a")]
    frames = frames_of(codebook, grids)
    clips = evaluation_clips(grids, 2, 2)
    metrics = evaluate_filling(tiny_model(codebook), clips, frames.__getitem__, codebook, SIZE, 10, 2, 1)
    assert set(metrics) == {"fill_frames"} | {f"fill_{m}_{method}" for m in MEASURES for method in FILL_METHODS}
    assert metrics["fill_frames"] == len(clips) == 2
    assert metrics["fill_psnr_codebook"] > 40


# ---------------------------------------------------------------- pictures


def test_pictures(codebook):
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    frames = frames_of(codebook, grids)
    gen = evaluate_generation(tiny_model(codebook), evaluation_clips(grids, 2, 3), frames.__getitem__, codebook, SIZE,
                              3, 0.0, 10, 0, pictures=[0, 1])
    grid = comparison_grid(gen.examples)
    h, w = frames["a"].shape[1:]
    assert grid.dtype == np.uint8 and grid.ndim == 2
    assert grid.shape[0] > 2 * 4 * h and grid.shape[1] > 5 * w  # 2 clips x 4 rows, 5 columns
    gif = animation(gen.examples)
    assert len(gif) == 5 and len({f.shape for f in gif}) == 1
    heat = entropy_picture(frames["a"][24], gen.examples[0].entropy, SIZE, SIZE)
    assert heat.dtype == np.uint8 and heat.ndim == 3 and heat.shape[2] == 3 and heat.shape[1] >= 3 * w
    cells = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(upsample_cells(cells, 4, 4, (8, 12)), np.kron(cells, np.ones((4, 4), int)))
    assert upsample_cells(cells, 8, 4, (12, 16)).shape == (12, 16)


# ---------------------------------------------------------------- the stage: outputs valid and declared


def write_workspace(root: Path, codebook: Codebook) -> Params:
    """Frames, codes, codebook and a model checkpoint in the stages' formats, tiny."""
    grids = [moving_grid(0, "a"), moving_grid(1, "b", n=28)]
    frames = frames_of(codebook, grids)
    paths = PathsConfig(frames=str(root / "data/frames"), codes=str(root / "data/codes"),
                        codebook=str(root / "data/codebook.h5"), model=str(root / "models/model.pt"),
                        metrics=str(root / "metrics"), plots=str(root / "plots"))
    for folder in (paths.frames, paths.codes):
        Path(folder).mkdir(parents=True)
    for g in grids:
        attrs = {"source": f"{g.video_id}.mp4", "train_end": g.train_end, "val_end": g.val_end}
        with h5py.File(Path(paths.frames) / f"{g.video_id}.h5", "w") as f:
            f["frames"] = frames[g.video_id]
            f.attrs.update(attrs)
        with h5py.File(Path(paths.codes) / f"{g.video_id}.h5", "w") as f:
            f["codes"] = g.codes
            f.attrs.update(attrs | {"k": K, "patch_size": SIZE, "stride": SIZE, "codebook": codebook.digest})
    with h5py.File(paths.codebook, "w") as f:
        f["centroids"] = codebook.centroids
        f.attrs.update({"std": codebook.std, "patch_size": SIZE, "digest": codebook.digest})
    model = tiny_model(codebook)
    Path(paths.model).parent.mkdir()
    torch.save({"model": model.state_dict(), "model_config": as_dict(model.cfg), "codebook": codebook.digest},
               paths.model)
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
    for method in GEN_METHODS:
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
        assert set(plots[0]["y"]) == {f"{paths['plots']}/horizon/{m}.json" for m in GEN_METHODS}


def test_stage_sources_are_deps_in_dvc_yaml():
    """Every videolm module the evaluate stage imports is a dependency of the stage."""
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('s', 'stages/evaluate.py'); "
            "importlib.util.module_from_spec(s); s.loader.exec_module(importlib.util.module_from_spec(s)); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('videolm'))))")
    modules = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    deps = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]["deps"])
    for module in modules:
        parts = module.split(".")
        if parts == ["videolm"]:
            continue
        path = "src/" + "/".join(parts) + ".py"
        package = "src/" + "/".join(parts[:2])
        assert path in deps or package in deps, f"{path} is imported by stages/evaluate.py but not a dep"


def test_no_clip_long_enough_names_the_keys(tmp_path, codebook):
    params = write_workspace(tmp_path, codebook)
    params.eval.horizon = 20
    from videolm.errors import VideoLMError
    with pytest.raises(VideoLMError, match=r"eval\.context=2 \+ eval\.horizon=20"):
        run_evaluate_stage(params)


def test_eval_params_are_validated():
    from videolm.config import ConfigError
    for key, value in [("context", 0), ("horizon", 0), ("temperature", -1.0), ("motion_threshold", -1.0),
                       ("clip_stride", -1), ("fill_candidates", 0), ("fill_sweeps", -1), ("n_pictures", 0),
                       ("threads", -1)]:
        params = Params(eval=EvalConfig(**{key: value}))
        with pytest.raises(ConfigError, match=f"eval.{key}="):
            params.validate()
