"""Stage `train`: the model of `params.model` on training code grids, early-stopped on validation."""

from pathlib import Path

import torch
from dvclive import Live

from videolm.cli import run_stage
from videolm.codes import load_code_grids, load_codebook
from videolm.config import as_dict
from videolm.io import atomic_path, write_json
from videolm.train import train_model


def main(params) -> None:
    codebook = load_codebook(params.paths.codebook)
    grids = load_code_grids(params.paths.codes, codebook)
    with Live(params.paths.live, dvcyaml=None, save_dvc_exp=False) as live:
        def log_epoch(epoch, metrics):
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()

        model, summary = train_model(grids, codebook, params, log_epoch)
    checkpoint = {"model": model.state_dict(), "model_config": as_dict(params.model), "k": codebook.k,
                  "codebook": codebook.digest, "summary": summary}
    with atomic_path(params.paths.model) as tmp, open(tmp, "wb") as f:
        torch.save(checkpoint, f)  # a file object: the archive's inner name does not take the temp name
    write_json(Path(params.paths.metrics) / "train.json", summary)
    print(summary)


if __name__ == "__main__":
    run_stage(main)
