"""Resumable training: a run stopped part-way (an exception in-process; the train stage stopped
by SIGTERM, Ctrl-C or SIGKILL) and started again ends with the same bits as an uninterrupted run,
curves included; an interrupted stage says in one line where it resumes; a resume state of other params or data is not used; a diverging run fails with one
line and writes nothing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import moving_grid, save_grid

from videolm.codes.grids import CodeGrid
from videolm.config import ModelConfig, Params, TrainConfig
from videolm.training.state import TrainState
from videolm.training.train import run_digest, train_model

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 3, 6


def tiny_params(**train) -> Params:
    """Dropout on, so that resuming must restore torch's generator too."""
    return Params(model=ModelConfig(embed_dim=8, hidden=8, head="independent", dropout=0.3),
                  train=TrainConfig(**{"epochs": EPOCHS, "steps_per_epoch": STEPS, "batch_size": 4, "crop": 6,
                                       "bptt": 4, "lr": 0.01, "threads": 1, "checkpoint_every": 4, **train}))


class Stop(Exception):
    pass


def run(codebook, params, resume=None, stop_at=None):
    """train_model, raising `Stop` from the callback of epoch `stop_at`; returns (weights, summary, logged)."""
    logged = []

    def log_epoch(epoch, metrics):
        if epoch == stop_at:
            raise Stop
        logged.append((epoch, metrics))

    model, summary = train_model([moving_grid()], codebook, params, log_epoch, resume)
    return model.state_dict(), summary, logged


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_stopped_run_resumes_to_the_same_bits(codebook, tmp_path):
    resume = tmp_path / "resume.pt"
    weights, summary, logged = run(codebook, tiny_params())
    with pytest.raises(Stop):
        run(codebook, tiny_params(), resume, stop_at=2)
    # saves at steps 4, 6 (epoch 1's end) and 8: the stopped run is resumed within epoch 2
    state = TrainState.load(resume)
    assert (state.step, state.epoch, len(state.history)) == (8, 1, 1)
    resumed_weights, resumed_summary, resumed_logged = run(codebook, tiny_params(), resume)
    assert_same_weights(resumed_weights, weights)
    assert resumed_summary == summary
    assert resumed_logged == logged  # epoch 1 replayed from the state, then 2 and 3
    # a run that saves states (here every step) computes the same as one that saves none
    assert_same_weights(run(codebook, tiny_params(checkpoint_every=1), tmp_path / "other.pt")[0], weights)


def test_state_of_other_params_is_not_resumed(codebook, tmp_path):
    resume = tmp_path / "resume.pt"
    with pytest.raises(Stop):
        run(codebook, tiny_params(lr=0.02), resume, stop_at=2)
    # a different lr: the state is not continued but replaced by this run's
    weights, summary, logged = run(codebook, tiny_params(), resume)
    fresh_weights, fresh_summary, fresh_logged = run(codebook, tiny_params())
    assert_same_weights(weights, fresh_weights)
    assert (summary, logged) == (fresh_summary, fresh_logged)
    assert TrainState.load(resume).digest == run_digest([moving_grid()], codebook, tiny_params())


def test_digest_names_params_and_data_but_not_how_states_are_saved(codebook):
    grids = [moving_grid()]
    digest = run_digest(grids, codebook, tiny_params())
    assert run_digest(grids, codebook, tiny_params(checkpoint_every=0, threads=2)) == digest
    assert run_digest(grids, codebook, tiny_params(epochs=EPOCHS + 1)) != digest
    assert run_digest(grids, codebook, tiny_params().model_copy(update={"seed": 1})) != digest
    codes = grids[0].codes.copy()
    codes[-1, 0, 0] += 1  # one code of one test frame
    assert run_digest([CodeGrid("clip", codes, 18, 22)], codebook, tiny_params()) != digest
    assert run_digest([moving_grid(video_id="other")], codebook, tiny_params()) != digest
    other_codebook = type(codebook)(codebook.centroids + 1, codebook.std, codebook.size)
    assert run_digest(grids, other_codebook, tiny_params()) != digest


# ---------------------------------------------------------------- the train stage, killed


STAGE_STEPS = 20
STAGE_ARGS = ["model.embed_dim=8", "model.hidden=8", "model.head=independent", "train.epochs=3",
              f"train.steps_per_epoch={STAGE_STEPS}", "train.batch_size=4", "train.crop=6", "train.bptt=4",
              "train.threads=1", "train.checkpoint_every=1"]
OUTPUTS = ["models/model.pt", "metrics/train.json", "dvclive/metrics.json",
           *(f"dvclive/plots/metrics/{name}.tsv" for name in ["train_loss", "train_perplexity", "val_loss",
                                                              "val_perplexity"])]
RESUME = "models/.resume/train.pt"  # the default paths.resume


def workspace(path: Path, codebook) -> Path:
    """params.yaml, a codebook and two videos' code grids at the default paths."""
    path.mkdir()
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    codebook.save(path / "data/codebook.h5")
    (path / "data/codes").mkdir()
    for seed, name in [(0, "a"), (1, "b")]:
        save_grid(moving_grid(seed, name), path / f"data/codes/{name}.h5", codebook, codebook.size, f"{name}.mp4")
    return path


def train_stage(cwd: Path, *args: str, wait: bool = True):
    command = [sys.executable, str(ROOT / "stages/train.py"), *STAGE_ARGS, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def read(cwd: Path) -> dict[str, bytes]:
    return {name: (cwd / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def finished(codebook, tmp_path_factory) -> Path:
    """A workspace where the train stage ran to the end, uninterrupted."""
    cwd = workspace(tmp_path_factory.mktemp("finished") / "w", codebook)
    result = train_stage(cwd)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"train: 3 epochs of \d+ steps \(steps \d+ s, validation \d+ s\); best epoch [1-3], val perplexity "
                        r"\d+\.\d\d in \d+ s", last), last
    assert not (cwd / RESUME).exists()  # removed once the model is written
    return cwd


@pytest.mark.slow
def test_diverging_stage_fails_and_keeps_the_last_outputs(finished):
    before = read(finished)
    result = train_stage(finished, "model.nonlinearity=relu", "train.lr=1e20", "train.grad_clip=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: training diverged: the training loss is nan at epoch 1, step 2 of {STAGE_STEPS}; lower train.lr "
        "(now 1e+20) or clip gradients with train.grad_clip (now 0; 0 = off)")
    assert read(finished) == before  # the last run's model, metrics and curves are kept


@pytest.mark.slow
def test_a_stopped_stage_says_where_it_resumes_and_resumes_to_the_same_bytes(codebook, finished, tmp_path):
    """One run stopped three times, each time later: by SIGTERM (a scheduler) and by Ctrl-C
    (SIGINT), each ending with one line naming the step of the resume state and the exit status
    of that signal; then killed (SIGKILL) within epoch 2, so that epoch 1's curves must be replayed
    and its running loss resumed. None leaves a model or a partial file, and the run that follows
    ends with the uninterrupted run's bytes."""
    cwd = workspace(tmp_path / "stopped", codebook)
    step = 0
    for signum, status, name in ((signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C"),
                                 (signal.SIGKILL, -signal.SIGKILL, None)):
        command = [sys.executable, str(ROOT / "stages/train.py"), *STAGE_ARGS]
        # Ctrl-C as at a terminal: a run started in the background (CI) inherits SIGINT ignored
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline, state = time.monotonic() + 60, None
        floor = step if name else max(step, STAGE_STEPS)
        while state is None or state.step <= floor:
            assert process.poll() is None and time.monotonic() < deadline, "the stage ended before it was stopped"
            time.sleep(0.005)
            state = TrainState.load(cwd / RESUME)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == status, stderr
        step = TrainState.load(cwd / RESUME).step
        if name:
            assert stderr.rstrip().splitlines()[-1].endswith(
                f"error: train: interrupted ({name}); nothing half-written was left, and the previous outputs are as "
                f"they were; the resume state of step {step} of {3 * STAGE_STEPS} is in {RESUME}: dvc repro, or this "
                f"command again, resumes from it")
        assert os.listdir(cwd / "models") == [".resume"]  # no checkpoint, no partial file
        assert not (cwd / "metrics/train.json").exists()
    assert STAGE_STEPS < step < 3 * STAGE_STEPS
    resumed = train_stage(cwd)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {step} of {3 * STAGE_STEPS}" in resumed.stderr
    assert read(cwd) == read(finished)  # the same weights and curves, and no wall-clock figure in any output
    assert not (cwd / RESUME).exists()
