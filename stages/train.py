"""Stage `train`: the model of `params.model` on training code grids; the epoch with the best
validation loss is kept (and `train.patience` > 0 stops early)."""

from pathlib import Path

from dvclive import Live

from videolm.cli import run_stage
from videolm.checkpoint import Checkpoint
from videolm.codebook import Codebook
from videolm.codes import load_code_grids
from videolm.io import guard_outputs, write_json
from videolm.train import train_model


def main(params) -> None:
    metrics_path = Path(params.paths.metrics) / "train.json"
    guard_outputs("train", {"paths.codes": params.paths.codes, "paths.codebook": params.paths.codebook},
                  {"paths.model": params.paths.model, "paths.live": params.paths.live, "paths.metrics": metrics_path})
    codebook = Codebook.load(params.paths.codebook)
    grids = load_code_grids(params.paths.codes, codebook)
    with Live(params.paths.live, dvcyaml=None, save_dvc_exp=False) as live:
        def log_epoch(epoch, metrics):
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()

        model, summary = train_model(grids, codebook, params, log_epoch)
    checkpoint = Checkpoint(model.state_dict(), params.model.model_dump(), codebook.k, codebook.digest, summary)
    checkpoint.save(params.paths.model)
    write_json(metrics_path, summary, "train")
    print(summary)


if __name__ == "__main__":
    run_stage(main)
