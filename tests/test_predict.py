"""`videolm predict` on a real video the workspace has not seen: a tiny workspace written by the
artifacts' own writers (codebook, code grids, an untrained tiny model), a moving square encoded with
PyAV. Its files are there, right, and the same bytes every run; each user error is one line."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import PATCH, K, moving_grid, save_grid, tiny_model, write_video
from PIL import Image

from videolm.cli.main import main
from videolm.codes.codebook import Codebook
from videolm.codes.grids import encode_frames, load_code_grids
from videolm.config import DecoderConfig
from videolm.data.video import decode_gray
from videolm.evaluation.baselines import fit_baselines
from videolm.evaluation.pictures import GAP, LABEL_HEIGHT
from videolm.image_metrics import MEASURES
from videolm.io import mark_of
from videolm.model.build import load_model
from videolm.model.checkpoint import Checkpoint, DecoderCheckpoint, weights_digest
from videolm.model.pixel_decoder import PixelDecoder

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES, HEIGHT, WIDTH, SCALE = 12, 48, 64, 0.5


def write_workspace(root: Path, codebook: Codebook, patch_size: int = PATCH) -> Path:
    """params.yaml (paths relative to `root`), the codebook, two code grids and an untrained model."""
    (root / "data/codes").mkdir(parents=True)
    codebook.save(root / "data/codebook.h5")
    for seed, name in enumerate("ab"):
        save_grid(moving_grid(seed, name), root / f"data/codes/{name}.h5", codebook, PATCH, f"{name}.mp4")
    model = tiny_model(codebook)
    Checkpoint(model.state_dict(), model.cfg.model_dump(), codebook.digest).save(root / "models/model.pt")
    params = {"data": {"scale": SCALE}, "patches": {"size": patch_size, "stride": patch_size}, "eval": {"threads": 1}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def square_video(path: Path, n_frames: int = N_FRAMES, height: int = HEIGHT, width: int = WIDTH) -> Path:
    """A bright square moving 4 px per frame across a gradient."""
    y, x = np.mgrid[:height, :width]
    frames = []
    for t in range(n_frames):
        frame = (2 * x + y).astype(np.uint8)
        frame[height // 3:height // 3 + 16, 4 * t:4 * t + 16] = 240
        frames.append(frame)
    return write_video(path, frames)


@pytest.fixture(scope="module")
def run(tmp_path_factory, codebook):
    """`videolm predict` run twice into one folder: (workspace, video, out, bytes of run 1, of run 2)."""
    root = tmp_path_factory.mktemp("predict")
    workspace = write_workspace(root / "ws", codebook)
    video = square_video(root / "square.mp4")
    out = root / "out"
    runs = []
    for _ in range(2):
        main(["predict", str(video), "--workspace", str(workspace), "--out", str(out)])
        runs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    return workspace, video, out, runs


def test_writes_the_three_files_the_same_bytes_each_run(run):
    _, _, out, (first, second) = run
    assert sorted(first) == ["square.json", "square.mp4", "square.png"]
    assert first == second
    assert all(mark_of(out / name) == "predict" for name in ("square.mp4", "square.png"))


def test_animation_has_a_frame_per_predicted_frame(run, tmp_path):
    workspace, video, out, _ = run
    height, width = int(HEIGHT * SCALE), int(WIDTH * SCALE)
    size = (4 * width + 3 * GAP, 2 * LABEL_HEIGHT + height)  # truth | prediction | flow | entropy, under two label rows
    with av.open(str(out / "square.mp4")) as container:
        pictures = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert len(pictures) == N_FRAMES - 1 and pictures[0].shape == (size[1] + size[1] % 2, size[0] + size[0] % 2)
    main(["predict", str(video), "--workspace", str(workspace), "--out", str(tmp_path), "--format", "gif"])
    with Image.open(tmp_path / "square.gif") as gif:
        assert gif.n_frames == N_FRAMES - 1 and gif.size == size
    assert (tmp_path / "square.json").read_bytes() == (out / "square.json").read_bytes()
    with Image.open(out / "square.png") as strip:
        assert strip.mode == "RGB" and strip.width > 8 * width


def test_metrics_match_a_direct_computation(run, codebook):
    workspace, video, out, _ = run
    metrics = json.loads((out / "square.json").read_text())
    frames = np.stack(list(decode_gray(video, SCALE)))
    codes = torch.from_numpy(encode_frames(frames, codebook, PATCH).astype(np.int64))
    model = load_model(workspace / "models/model.pt", codebook)
    with torch.no_grad():
        logits, _, _ = model(codes[None, :-1])
    nll = F.cross_entropy(logits[0].flatten(0, 2), codes[1:].flatten(), reduction="mean")
    baselines = fit_baselines(load_code_grids(workspace / "data/codes", codebook), K)
    copy_nll = baselines.copy_nll(codes[:-1].numpy(), codes[1:].numpy()).mean()
    copy_mse = ((frames[1:].astype(np.float64) - frames[:-1]) ** 2).mean()

    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert metrics["frames"] == N_FRAMES and metrics["patches_scored"] == (N_FRAMES - 1) * codes[0].numel()
    assert metrics["model_bits_per_patch"] == pytest.approx(float(nll) / math.log(2), rel=1e-5)
    assert metrics["copy_previous_bits_per_patch"] == pytest.approx(copy_nll / math.log(2), rel=1e-9)
    assert metrics["model_vs_copy_previous_bits"] == pytest.approx(
        metrics["model_bits_per_patch"] / metrics["copy_previous_bits_per_patch"])
    assert metrics["psnr_1step_copy_last"] == pytest.approx(10 * math.log10(255 ** 2 / copy_mse))
    assert metrics["shown"] == "model" and "psnr_1step_model_pixels" not in metrics  # no decoder here
    assert 0 <= metrics["model_entropy_bits_per_patch"] <= math.log2(K)
    assert metrics["video"] == str(video) and metrics["codebook_digest"] == codebook.digest
    assert metrics["model_md5"] == hashlib.md5((workspace / "models/model.pt").read_bytes()).hexdigest()


def test_console_script_writes_the_same_mp4_as_main(run, tmp_path):
    """The entry point pyproject.toml declares is `main`; run as a program it writes an MP4 the
    same bytes as `main` in this process does, and replaces its own files."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["videolm"].split(":")
    assert getattr(import_module(module), function) is main
    workspace, video, _, _ = run
    args = ["predict", str(video), "--workspace", str(workspace), "--format", "mp4"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", module, *args, "--out", str(tmp_path / "a")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "predicting square" in done.stderr and "bits per patch" in done.stdout
    for _ in range(2):
        main([*args, "--out", str(tmp_path / "b")])
    first, second = (tmp_path / "a/square.mp4").read_bytes(), (tmp_path / "b/square.mp4").read_bytes()
    assert first == second and mark_of(tmp_path / "b/square.mp4") == "predict"
    with av.open(str(tmp_path / "a/square.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == N_FRAMES - 1


def break_model(ws: Path) -> None:
    (ws / "models/model.pt").unlink()


def break_codebook(ws: Path) -> None:
    (ws / "data/codebook.h5").unlink()


def wrong_patch_size(ws: Path) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["patches"] = {"size": 8, "stride": 8}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize("video, breaks, expected", [
    ("missing.mp4", None, ["missing.mp4: no such file"]),
    ("text.mp4", None, ["text.mp4: cannot open as a video"]),
    ("tiny.mp4", None, ["tiny.mp4: frames 8x8 after data.scale=0.5 are smaller than data.min_size=16 (the pipeline's "
                        "limit)"]),
    ("one.mp4", None, ["one.mp4: a single frame", "at least 2"]),
    ("square.mp4", break_model, ["models/model.pt: no model checkpoint", "run the train stage"]),
    ("square.mp4", break_codebook, ["data/codebook.h5: codebook not found", "run the fit_codebook stage"]),
    ("square.mp4", wrong_patch_size, ["4x4 patches", "patches.size=8", "dvc repro"]),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, codebook, capsys, video, breaks, expected):
    workspace = write_workspace(tmp_path / "ws", codebook)
    square_video(tmp_path / "square.mp4")
    square_video(tmp_path / "tiny.mp4", height=16, width=16)  # real, but too small for SSIM (>= 11 px a side)
    square_video(tmp_path / "one.mp4", n_frames=1)
    (tmp_path / "text.mp4").write_text("not a video\n")
    if breaks:
        breaks(workspace)
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(tmp_path / video), "--workspace", str(workspace), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.startswith("error: ") and error.count("\n") == 1
    assert all(part in error for part in expected), error
    assert not (tmp_path / "out").exists()


def test_refuses_an_output_folder_that_is_a_file_or_a_file_it_did_not_make(tmp_path, codebook, capsys):
    workspace = write_workspace(tmp_path / "ws", codebook)
    video = square_video(tmp_path / "square.mp4")
    (tmp_path / "file").write_text("mine\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/square.png").write_bytes(b"mine")
    for out, expected in [("file", "--out "), ("out", "square.png: this file is in the way")]:
        with pytest.raises(SystemExit):
            main(["predict", str(video), "--workspace", str(workspace), "--out", str(tmp_path / out)])
        assert expected in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine\n" and (tmp_path / "out/square.png").read_bytes() == b"mine"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["square.png"]


def test_the_workspace_decoder_makes_the_pictures(tmp_path, codebook):
    """With a pixel decoder in the workspace its frames are shown and scored beside the codes'; an
    untrained one copies the frame before, so it scores exactly as copy-last does."""
    workspace = write_workspace(tmp_path / "ws", codebook)
    model = load_model(workspace / "models/model.pt", codebook)
    decoder = PixelDecoder.for_model(DecoderConfig(width=4, motion="frames"), model, codebook, PATCH)
    DecoderCheckpoint(decoder.state_dict(), decoder.cfg.model_dump(), weights_digest(model), codebook.digest,
                      PATCH).save(workspace / "models/decoder.pt")
    video = square_video(tmp_path / "square.mp4")
    main(["predict", str(video), "--workspace", str(workspace), "--out", str(tmp_path / "out")])
    metrics = json.loads((tmp_path / "out/square.json").read_text())
    assert metrics["shown"] == "model_pixels"
    for measure in MEASURES:
        assert metrics[f"{measure}_1step_model_pixels"] == metrics[f"{measure}_1step_copy_last"], measure
    assert metrics["psnr_1step_model"] != metrics["psnr_1step_copy_last"]


def test_info_names_what_the_workspace_holds_and_what_is_missing(tmp_path, codebook, capsys):
    workspace = write_workspace(tmp_path / "ws", codebook)
    main(["info", "--workspace", str(workspace)])
    out = capsys.readouterr().out
    assert f"codebook   k={codebook.k}, {PATCH}x{PATCH} patches, digest {codebook.digest}" in out
    assert "model      models/model.pt: " in out and " weights, md5 " in out
    assert "frames     missing: data/frames (the extract_frames stage makes it)" in out
    assert "decoder    missing: models/decoder.pt (the train_decoder stage makes it)" in out


@pytest.mark.parametrize("argv, expected", [
    (["info"], "not a videolm workspace (no params.yaml)"),
    (["predict", "VIDEO_DIR"], "VIDEO_DIR: a folder, not a video file"),
])
def test_outside_a_workspace_or_given_a_folder_says_so_in_one_line(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "VIDEO_DIR").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.startswith("error: ") and error.count("\n") == 1 and expected in error, error
    if argv[0] == "info":
        assert "--workspace DIR" in error
