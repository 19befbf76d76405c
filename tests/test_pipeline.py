"""End to end: `dvc repro` of the real dvc.yaml in a temporary git repository, on a few
seconds of synthetic video written with PyAV, with tiny params."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
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
    "decoder": {"width": 4, "steps": 4, "batch_size": 2, "crop": 4, "context": 1, "horizon": 2, "val_every": 2},
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


def run(cmd: list[str], cwd: Path, path: list[Path] = ()) -> str:
    """Run a command in the project copy, importing the copy's own `src/` (not the installed one),
    with the folders of `path` before it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*path, cwd / "src"]))}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def new_project(repo: Path) -> Path:
    """A copy of the project in a fresh git + DVC repository at `repo`, tiny params, two clips."""
    repo.mkdir(parents=True, exist_ok=True)
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
    return repo


FIRST_REPRO: dict[Path, str] = {}  # what the first `dvc repro` of each project printed


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """`new_project` with `dvc repro` done."""
    repo = new_project(tmp_path_factory.mktemp("project"))
    FIRST_REPRO[repo] = run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo


def out_hashes(repo: Path) -> dict[str, str]:
    """md5 of every out of every stage, as `dvc.lock` records them (cached or not)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


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
def test_every_stage_ends_with_one_line_in_one_format(project: Path) -> None:
    """`<stage>: <what it did> in <N> s`, the last line each stage printed under `dvc repro`."""
    out = FIRST_REPRO[project]
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    for name in stages:
        printed = out.split(f"Running stage '{name}':", 1)[1]
        printed = re.split(r"\n(?:Running stage '|Updating lock file|Generating lock file)", printed, maxsplit=1)[0]
        last = printed.strip().splitlines()[-1]
        assert re.fullmatch(rf"{name}: \S.* in \d+ s", last), (name, last)


@pytest.mark.slow
def test_forced_rerun_gives_identical_bytes(project: Path) -> None:
    """`dvc repro -f` runs every stage again: every out (frames, patches, codebook, code grids,
    model, metrics, curves, plots, pictures) has the same md5 as after the first run."""
    first = out_hashes(project)
    assert len(first) >= 15
    run([sys.executable, "-m", "dvc", "repro", "-f"], project)
    second = out_hashes(project)
    assert {path for path in first if first[path] != second.get(path)} == set()


@pytest.mark.slow
def test_second_repro_runs_nothing(project: Path) -> None:
    out = run([sys.executable, "-m", "dvc", "repro"], project)
    assert "Running stage" not in out, out
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], project)


@pytest.mark.slow
def test_a_clone_pulls_from_a_shared_remote_and_reruns_nothing(project: Path, tmp_path) -> None:
    """A team shares results through a DVC remote (here a local folder): after `dvc push`, a
    fresh git clone that runs `dvc pull` has every output, byte for byte, and `dvc repro` then
    runs no stage."""
    origin = tmp_path / "origin"  # a copy, so that the shared project's git state is left as it is
    shutil.copytree(project, origin, symlinks=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], origin)
    run(git + ["add", "-A"], origin)
    run(git + ["commit", "-qm", "results and the shared remote"], origin)
    run([sys.executable, "-m", "dvc", "push"], origin)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "models/model.pt").exists()  # outputs are not in git
    run([sys.executable, "-m", "dvc", "pull"], clone)
    for path in ["models/model.pt", "data/codebook.h5", "data/codes/slide.h5", "plots/predictions.png"]:
        assert (clone / path).read_bytes() == (origin / path).read_bytes(), path
    out = run([sys.executable, "-m", "dvc", "repro"], clone)
    assert "Running stage" not in out, out


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
    assert result.stderr.strip().splitlines() == ["error: codebook.k=0 is not allowed: Input should be greater "
                                                  "than or equal to 2"]


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
    ("train.lr", 0.005, {"train"}, {"train", "train_decoder", "evaluate"}),
    ("decoder.lr", 0.01, {"train_decoder"}, {"train_decoder", "evaluate"}),
    ("eval.context", 1, {"evaluate"}, {"evaluate"}),
    ("codebook.k", 24, {"fit_codebook"}, {"fit_codebook", "encode", "train", "train_decoder", "evaluate"}),
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
    """A stage's code deps are the modules it runs: editing a module leaves every stage that does
    not import it cached (video decoding and worker processes are not evaluation's or training's,
    DDP is not evaluation's), and the stage that does reruns alone when its outputs come out the same."""
    for module, users in [("data/video.py", {"extract_frames"}),
                          ("data/parallel.py", {"extract_frames", "sample_patches", "encode"}),
                          ("training/distributed.py", {"train"})]:
        source = project / "src/videolm" / module
        original = source.read_text()
        source.write_text(original + "\n# an edit\n")
        assert stages_to_run(project) == users, module
        source.write_text(original)
    assert stages_to_run(project) == set()
    source = project / "src/videolm/training/distributed.py"
    source.write_text(source.read_text() + "\n# an edit\n")
    assert repro_ran(project) == {"train"}  # the same model bytes: train_decoder and evaluate stay cached


def stage_error(repo: Path, script: str, *overrides: str) -> str:
    """Run a stage expected to refuse: exit status 2 and one `error:` line, returned."""
    result = subprocess.run([sys.executable, script, *overrides], cwd=repo, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo / "src")})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_an_existing_folder_is_never_replaced_by_an_output(project: Path, tmp_path) -> None:
    """A user's folder at the model's path is refused before training, and kept as it was."""
    folder = tmp_path / "my_results"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "notes.txt").write_text("a week of work")
    before = tree(folder)
    line = stage_error(project, "stages/train.py", f"paths.model={folder}")
    assert "my_results: this folder is in the way of the train stage's output" in line
    assert tree(folder) == before


@pytest.mark.slow
def test_an_unwritable_output_is_one_line(project: Path) -> None:
    """The file system refusing a write (here: a file where a folder should be) is one line, not a traceback."""
    line = stage_error(project, "stages/fit_codebook.py", "paths.metrics=params.yaml/metrics")
    assert line.startswith("error: params.yaml") and "Not a directory" in line


@pytest.mark.slow
def test_an_output_inside_an_input_is_refused(project: Path) -> None:
    """Frames written into the videos' folder would delete the videos: refused before any work."""
    before = tree(project / "data/synth")
    line = stage_error(project, "stages/extract_frames.py", "paths.frames=data/synth")
    assert "paths.frames: 'data/synth' overlaps the input data.dir='data/synth'" in line
    stage_error(project, "stages/extract_frames.py", "paths.frames=data/synth/frames")
    assert tree(project / "data/synth") == before


@pytest.mark.slow
def test_killed_extraction_leaves_nothing_and_the_next_repro_completes(project: Path, tmp_path) -> None:
    """SIGKILL `extract_frames` while it writes: the output is not there (only a temporary);
    the next `dvc repro extract_frames` removes the temporary, completes, and caches what an
    uninterrupted run makes (the same md5 as the first project's frames)."""
    repo = new_project(tmp_path / "killed")
    for i in range(12):  # enough work to be caught in the middle
        write_clip(repo / f"data/synth/more{i}.mp4", n_frames=40, seed=10 + i)
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    proc = subprocess.Popen([sys.executable, "stages/extract_frames.py"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((repo / "data").glob(".frames.tmp*/*.h5")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "extraction ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (repo / "data/frames").exists() and list((repo / "data").glob(".frames.tmp*"))
    for i in range(12):
        (repo / f"data/synth/more{i}.mp4").unlink()
    out = run([sys.executable, "-m", "dvc", "repro", "extract_frames"], repo)
    assert "Running stage 'extract_frames'" in out
    assert not list((repo / "data").glob(".frames.tmp*"))
    assert "extract_frames" not in stages_to_run(repo)
    assert out_hashes(repo)["data/frames"] == out_hashes(project)["data/frames"]
