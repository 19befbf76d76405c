"""Training under torchrun: 2 CPU processes (gloo) follow the single-process run with the same global
batch, only rank 0 writes, a killed 2-process run resumes to the same bytes, and the device and
process-count params fail clearly where they cannot work. The runs train the transformer (the
model with the most parts for DDP to synchronize; the rCNN's single-process resume is test_resume's)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_resume import RESUME, read, train_stage, workspace

from videolm.config import ConfigError, load_params
from videolm.device import resolve_device
from videolm.errors import VideoLMError
from videolm.training.crops import CropSampler
from videolm.training.state import TrainState

# dropout off: with it, each rank draws its own masks and the runs differ by more than rounding
ARGS = ["model.name=transformer", "model.dropout=0.0", "train.lr=0.01", "train.epochs=6", "train.steps_per_epoch=2", "train.checkpoint_every=0"]
# Two processes sum the batch's gradients in another order than one: only float rounding apart
# after 12 Adam steps (about 1e-6 relative measured); 1e-4 leaves room, and a run that saw other
# crops or averaged its gradients wrongly would be off by far more (the loss moves ~10% per step).
RTOL = 1e-4


def curves(cwd: Path) -> dict[str, list[float]]:
    """The logged per-epoch curves of a train stage run."""
    out = {}
    for name in ["train_loss", "val_loss"]:
        rows = (cwd / f"dvclive/plots/metrics/{name}.tsv").read_text().splitlines()[1:]
        out[name] = [float(row.split("\t")[-1]) for row in rows]
    return out


def ranks_running(cwd: Path) -> list[int]:
    """Processes whose working directory is `cwd` (the stage, torchrun and the ranks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == str(cwd):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def two_processes(codebook, tmp_path_factory) -> Path:
    cwd = workspace(tmp_path_factory.mktemp("ddp") / "w", codebook)
    result = train_stage(cwd, *ARGS, "train.processes=2")
    assert result.returncode == 0, result.stderr
    assert not (cwd / RESUME).exists()
    return cwd


@pytest.mark.slow
def test_two_processes_follow_one_process(codebook, two_processes, tmp_path):
    one = workspace(tmp_path / "one", codebook)
    result = train_stage(one, *ARGS)
    assert result.returncode == 0, result.stderr
    a, b = curves(one), curves(two_processes)
    assert len(a["train_loss"]) == len(b["train_loss"]) == 6
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=RTOL, err_msg=name)
    assert a["train_loss"][-1] < 0.92 * a["train_loss"][0]  # it learned (2.79 to 2.49): not two flat lines
    summary = json.loads((two_processes / "metrics/train.json").read_text())
    assert summary["epochs_run"] == 6
    state_one = torch.load(one / "models/model.pt", weights_only=True)["model"]
    state_two = torch.load(two_processes / "models/model.pt", weights_only=True)["model"]
    for key in state_one:
        torch.testing.assert_close(state_two[key], state_one[key], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_bytes(codebook, two_processes, tmp_path):
    killed = workspace(tmp_path / "killed", codebook)
    process = train_stage(killed, *ARGS, "train.processes=2", wait=False)
    deadline = time.monotonic() + 120
    state = None
    while state is None or state.epoch < 2:  # killed after epoch 2 of 6 was saved
        assert process.poll() is None and time.monotonic() < deadline, "the stage ended before it could be killed"
        time.sleep(0.01)
        state = TrainState.load(killed / RESUME)
    process.send_signal(signal.SIGKILL)  # the launcher: torchrun is told to stop its ranks
    process.wait()
    while ranks_running(killed):
        assert time.monotonic() < deadline, "ranks went on after the stage was killed"
        time.sleep(0.05)
    state = TrainState.load(killed / RESUME)
    assert 2 <= state.epoch < 6 and len(state.saved["rng"]) == 2  # each rank's generators
    assert not (killed / "models/model.pt").exists()

    resumed = train_stage(killed, *ARGS, "train.processes=2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {state.step} of 12" in resumed.stderr
    assert resumed.stderr.count("resuming at step") == 1  # rank 0 says it; only rank 0 writes
    assert read(killed) == read(two_processes)


def test_crop_sampler_shares_each_batch_between_ranks():
    one = list(CropSampler(3, 6, 4))
    assert one == list(range(12, 24)) and len(CropSampler(3, 6, 4)) == 12
    ranks = [list(CropSampler(3, 6, 4, rank, 2)) for rank in range(2)]
    assert ranks[0] == [12, 13, 16, 17, 20, 21] and ranks[1] == [14, 15, 18, 19, 22, 23]
    assert sorted(ranks[0] + ranks[1]) == one


def test_batch_must_be_shared_equally(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    with pytest.raises(ConfigError, match=r"train.batch_size=16 with train.processes=3 is not allowed"):
        load_params(tmp_path, ["train.processes=3"])
    assert load_params(tmp_path, ["train.processes=4"]).train.processes == 4


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"]
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(VideoLMError, match="device=cuda: no CUDA device"):
            resolve_device("cuda")


def test_bf16_is_refused_on_the_cpu(codebook, tmp_path):
    cwd = workspace(tmp_path / "w", codebook)
    result = train_stage(cwd, *ARGS, "train.precision=bf16")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: train.precision=bf16 needs a CUDA device")
    assert not (cwd / "models").exists()
