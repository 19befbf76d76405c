"""Stage `train`: the model of `params.model` on training code grids; the epoch with the best
validation loss is kept (and `train.patience` > 0 stops early).

A killed run, started again with the same params, resumes from `paths.resume` (removed once
the model is written). The outputs hold no wall-clock figures, so that identical runs give
identical bytes; the run's durations are printed instead, on the last line.

With `train.processes` > 1 this script starts itself again under torchrun, one process per
rank, and waits; only rank 0 writes the outputs.
"""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import contextlib
import signal
import sys
from pathlib import Path

from dvclive import Live
from videolm.codes.codebook import Codebook
from videolm.codes.grids import load_code_grids
from videolm.errors import VideoLMError
from videolm.io import guard_outputs, write_json
from videolm.model.checkpoint import Checkpoint
from videolm.stage import Interrupted, run_stage
from videolm.training.distributed import Ranks, launch_torchrun, under_torchrun
from videolm.training.state import TrainState
from videolm.training.train import train_model


def main(params) -> str | None:
    metrics_path = Path(params.paths.metrics) / "train.json"
    guard_outputs("train", {"paths.codes": params.paths.codes, "paths.codebook": params.paths.codebook},
                  {"paths.model": params.paths.model, "paths.metrics": metrics_path, "paths.resume": params.paths.resume,
                   "paths.live": Path(params.paths.live) / "metrics.json"})  # dvclive replaces only its own files
    if params.train.processes > 1 and not under_torchrun():
        if launch_torchrun(params.train.processes, __file__, sys.argv[1:]):
            raise VideoLMError(f"a training process of the {params.train.processes} failed (its message is above; "
                               f"nothing was written)")
        return f"{params.train.processes} training processes under torchrun"
    codebook = Codebook.load(params.paths.codebook)
    grids = load_code_grids(params.paths.codes, codebook)
    seconds = {}
    with contextlib.ExitStack() as stack:
        live = []

        def log_epoch(epoch, metrics):
            if not live:  # opening clears the last run's curves: not before this run has some to show
                live.append(stack.enter_context(Live(params.paths.live, dvcyaml=None, save_dvc_exp=False)))
            for name, value in metrics.items():
                live[0].log_metric(name, value)
            live[0].next_step()

        try:
            model, summary = train_model(grids, codebook, params, log_epoch, params.paths.resume, seconds)
        except KeyboardInterrupt as err:
            raise Interrupted(resume_note(params), getattr(err, "signum", signal.SIGINT)) from None
    if not Ranks.launched().main:
        return None
    checkpoint = Checkpoint(model.state_dict(), params.model.model_dump(), codebook.digest)
    checkpoint.save(params.paths.model)
    write_json(metrics_path, summary, "train")
    Path(params.paths.resume).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return (f"{summary['epochs_run']} epochs of {params.train.steps_per_epoch} steps (steps {seconds['steps']:.0f} s, "
            f"validation {seconds['validation']:.0f} s); best epoch {summary['best_epoch']}, val perplexity "
            f"{summary['val_perplexity']:.2f}")


def resume_note(params) -> str:
    """What an interrupted run leaves to resume from: the step of its last resume state."""
    state = TrainState.load(params.paths.resume)
    total = params.train.epochs * params.train.steps_per_epoch
    if state is None:
        return ("no resume state was saved yet (one is saved at each epoch's end, and every "
                "train.checkpoint_every steps): the next run starts over")
    return (f"the resume state of step {state.step} of {total} is in {params.paths.resume}: dvc repro, or this "
            f"command again, resumes from it")


if __name__ == "__main__":
    run_stage(main)
