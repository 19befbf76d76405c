"""End to end: `dvc repro` of the real dvc.yaml in a temporary git repository, on a few
seconds of synthetic video written with PyAV, with tiny params."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"dir": "data/synth"},
    "patches": {"n_train": 2000, "n_heldout": 200},
    "codebook": {"k": 32, "max_iter": 3, "batch_size": 256},
    "model": {"embed_dim": 8, "hidden": 16},
    "train": {"epochs": 2, "steps_per_epoch": 5, "batch_size": 4, "bptt": 4, "crop": 4},
    "eval": {"n_pictures": 1, "context": 2, "horizon": 3},
}


def write_clip(path: Path, n_frames: int = 40, size=(64, 96), shift: int = 2, seed: int = 0) -> None:
    """A random texture sliding `shift` pixels per frame, encoded with mpeg4."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (size[0] // 4, size[1] // 4), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        for t in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.roll(texture, t * shift, axis=1), format="gray")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def deep_update(base: dict, new: dict) -> dict:
    for key, value in new.items():
        base[key] = deep_update(base[key], value) if isinstance(value, dict) else value
    return base


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command in the project copy, importing the copy's own `src/` (not the installed one)."""
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project in a fresh git + DVC repository, tiny params, `dvc repro` done."""
    repo = tmp_path_factory.mktemp("project")
    for name in ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(ROOT / name, repo / name)
    for name in ["stages", "src"]:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = deep_update(yaml.safe_load((repo / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "data/synth").mkdir(parents=True)
    write_clip(repo / "data/synth/slide.mp4")
    write_clip(repo / "data/synth/slow.mp4", n_frames=30, shift=1, seed=1)
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], repo)
    run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo


@pytest.mark.slow
def test_repro_writes_every_output(project: Path) -> None:
    assert sorted(p.name for p in (project / "data/frames").glob("*.h5")) == ["slide.h5", "slow.h5"]
    assert sorted(p.name for p in (project / "data/codes").glob("*.h5")) == ["slide.h5", "slow.h5"]
    assert (project / "models/model.pt").stat().st_size > 0
    metrics = json.loads((project / "metrics/eval.json").read_text())
    for name in ["model_perplexity", "unigram_perplexity", "copy_previous_perplexity", "psnr_1step_model"]:
        assert np.isfinite(metrics[name]), name
    assert 1 <= metrics["model_perplexity"] <= TINY["codebook"]["k"] * 2
    frames = json.loads((project / "metrics/frames.json").read_text())
    assert frames["videos"] == 2 and frames["frames"] == 70 and frames["split_rule"] == "time"
    assert (project / "plots/predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    val = (project / "dvclive/plots/metrics/val_perplexity.tsv").read_text().splitlines()
    assert len(val) == 1 + TINY["train"]["epochs"]


@pytest.mark.slow
def test_second_repro_runs_nothing(project: Path) -> None:
    out = run([sys.executable, "-m", "dvc", "repro"], project)
    assert "Running stage" not in out, out
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], project)


@pytest.mark.slow
def test_workspace_has_only_declared_outputs(project: Path) -> None:
    """Hydra writes no outputs/ or .hydra/ folders, and nothing stray appears."""
    assert not (project / "outputs").exists()
    assert not list(project.rglob(".hydra"))
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    declared = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], project)
    new_files = [line[3:] for line in status.splitlines()]
    stray = [path for path in new_files if not path.endswith((".gitignore", "dvc.lock"))
             and not any(path == out or path.startswith(out + "/") for out in declared)]
    assert new_files and stray == [], stray


@pytest.mark.slow
def test_bad_param_fails_with_key_named(project: Path) -> None:
    result = subprocess.run([sys.executable, "stages/fit_codebook.py", "codebook.k=0"], cwd=project,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: codebook.k=0 is not allowed: expected 2..65535 "
                                                  "(codes are stored as uint16)"]


def stages_to_run(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    return set(json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], repo)))


def repro_ran(repo: Path) -> set[str]:
    out = run([sys.executable, "-m", "dvc", "repro"], repo)
    return set(re.findall(r"Running stage '([\w-]+)'", out))


def set_param(repo: Path, dotted: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    *parents, key = dotted.split(".")
    node = params
    for name in parents:
        node = node[name]
    node[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
@pytest.mark.parametrize("key, value, changed, expected", [
    ("train.lr", 0.005, {"train"}, {"train", "evaluate"}),
    ("eval.context", 1, {"evaluate"}, {"evaluate"}),
    ("codebook.k", 24, {"fit_codebook"}, {"fit_codebook", "encode", "train", "evaluate"}),
])
def test_param_change_reruns_only_dependent_stages(project: Path, key, value, changed, expected) -> None:
    """`dvc status` names the stages that read the param; `dvc repro` runs them and what
    depends on their outputs, and nothing else."""
    set_param(project, key, value)
    assert stages_to_run(project) == changed
    assert repro_ran(project) == expected
    assert stages_to_run(project) == set()


@pytest.mark.slow
def test_source_edit_reruns_the_stages_that_import_it(project: Path) -> None:
    source = project / "src/videolm/dataset.py"
    source.write_text(source.read_text() + "\n# an edit\n")
    assert stages_to_run(project) == {"train"}
    ran = repro_ran(project)
    assert "train" in ran and ran <= {"train", "evaluate"}, ran
