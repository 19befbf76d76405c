"""The three models over the same codes, compared on one budget: rcnn, rnn and transformer, each
trained, given its own pixel decoder and evaluated by `dvc exp run`, then scored on the held-out
real clips (`heldout.py`).

    python benchmarks/models.py                      # every variant below, one after the other
    python benchmarks/models.py --only transformer   # some of them (the table keeps the others' rows)

Two budgets, on the default data and its params otherwise:
- `time`: each model's `train.epochs` set, from its measured seconds per epoch, so that it
  trains about as long as the default rCNN on a 2-core Intel Xeon (the transformer at
  train.lr=0.007, the best of a sweep: docs/training.md; the rCNN's default 0.002 is its best);
- `params`: each model's width set so that it has about the default rCNN's parameters (the
  transformer for 10 epochs, the budget its learning rate was chosen at).
A variant sized for both stands in both; the table gives the seconds each variant took.

Each variant is one `dvc exp run -n models-<name> -S ...` in this workspace (DVC keeps it as an
experiment: `dvc exp show`); the default rCNN's is `dvc exp run -f` (the default run again, for
its time). What the run left in the workspace is read, `heldout.py`'s measures are taken on it,
and the workspace is put back as the commit has it (`git checkout HEAD --` params.yaml, dvc.lock
and the outputs git keeps; `dvc checkout` of the outputs the cache holds).
Rows go to `--out`'s JSON beside it, and the table to `--out`. Train seconds are the training
steps' (the train stage's last line), so the machine should have nothing else running.
"""

from __future__ import annotations

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import heldout
from report import cpuinfo, table

from videolm.cli.workspace import load_workspace_params

ROOT = Path(__file__).resolve().parents[1]
HORIZONS = heldout.HORIZONS

TRANSFORMER = ["model.name=transformer", "model.hidden=52", "model.dropout=0.1", "train.lr=0.007"]  # the transformer at both budgets

# name: (budgets it stands in, what it is, dvc exp run's -S overrides)
VARIANTS = {
    "rcnn": ("time, params", "rCNN (the default)", []),
    "rnn-time": ("time", "rNN", ["model.name=rnn", "train.epochs=32"]),
    "rnn-params": ("params", "rNN, hidden 256", ["model.name=rnn", "model.hidden=256", "train.epochs=22"]),
    "transformer-time": ("time", "transformer, hidden 52, lr 0.007, 8 epochs", [*TRANSFORMER, "train.epochs=8"]),
    "transformer": ("params", "transformer, hidden 52, lr 0.007, 10 epochs", [*TRANSFORMER, "train.epochs=10"]),
}


def command(name: str) -> list[str]:
    """The `dvc exp run` of a variant."""
    overrides = VARIANTS[name][2]
    if not overrides:
        return ["dvc", "exp", "run", "-n", f"models-{name}", "-f"]
    return ["dvc", "exp", "run", "-n", f"models-{name}", *(a for o in overrides for a in ("-S", o))]


def run_variant(name: str, branch: str) -> dict:
    """Run one variant's experiment and measure what it left in the workspace; then put the
    workspace back as the commit has it, on `branch`."""
    print(f"models: {' '.join(command(name))}", flush=True)
    done = subprocess.run(command(name), cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"models: {name}: dvc exp run failed:\n{done.stderr[-3000:]}")
    seconds = re.search(r"\(steps (\d+) s, validation (\d+) s\)", done.stdout + done.stderr)
    params = load_workspace_params(ROOT)
    try:
        t = params.train
        trained = json.loads((ROOT / params.paths.metrics / "train.json").read_text())
        evaluated = json.loads((ROOT / params.paths.metrics / "eval.json").read_text())
        curve = json.loads((ROOT / params.paths.plots / "horizon" / "model_pixels.json").read_text())
        _, held = heldout.measure(ROOT)
    finally:
        subprocess.run(["git", "reset", "-q"], cwd=ROOT, check=True)  # dvc exp run stages its files
        in_git = [params.paths.metrics, params.paths.live, f"{params.paths.plots}/horizon"]  # outputs git keeps
        subprocess.run(["git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock", *in_git], cwd=ROOT, check=True)
        # --allow-missing: the commit's outputs are absent from the cache of a machine that did not make them
        subprocess.run(["dvc", "checkout", "-q", "--allow-missing"], cwd=ROOT, check=True)
        if current_branch() != branch:  # an interrupted dvc exp run can leave HEAD detached at the commit
            subprocess.run(["git", "checkout", "-q", branch], cwd=ROOT, check=True)
    positions = trained["epochs_run"] * t.steps_per_epoch * t.batch_size * t.crop ** 2 * t.bptt
    return {"name": name, "budgets": VARIANTS[name][0], "what": VARIANTS[name][1],
            "command": " ".join(command(name)), "parameters": trained["parameters"],
            "train_seconds": int(seconds.group(1)) if seconds else None, "positions": positions,
            "val_perplexity": trained["val_perplexity"], "test_perplexity": evaluated["model_perplexity"],
            "x_copy": evaluated["model_vs_copy_previous_perplexity"],
            "psnr_moving": [curve[h - 1]["psnr_moving"] for h in HORIZONS],
            "heldout_perplexity": held["model_perplexity"], "heldout_x_copy": held["model_vs_copy_previous_perplexity"],
            "heldout_psnr_moving": held["model_pixels_psnr_moving"], "cpu": cpu_name()}


def cpu_name() -> str:
    """The CPU's vendor and family ("AMD EPYC", "Intel Xeon"): rows run on different CPUs are
    not compared on time, and their weights differ in the last bits (docs/reliability.md)."""
    words = re.sub(r"\(R\)|\(TM\)", "", cpuinfo("model name") or "unknown").split()
    return " ".join(words[:2])


def current_branch() -> str | None:
    """The branch HEAD is on; None when HEAD is detached."""
    done = subprocess.run(["git", "symbolic-ref", "-q", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or None


def markdown(rows: list[dict]) -> list[str]:
    db = lambda values: " / ".join(f"{v:.2f}" for v in values)
    return table(["model", "budget", "CPU", "parameters", "train s", "positions/s", "val ppl", "test ppl", "x copy-prev",
                  "PSNR moving h1/h5/h10", "held-out ppl", "held-out x copy-prev", "held-out PSNR h1/h5/h10"],
                 [[f"{r['what']}: `{r['command']}`", r["budgets"], r["cpu"], f"{r['parameters']:,}",
                   "–" if r["train_seconds"] is None else str(r["train_seconds"]),
                   "–" if r["train_seconds"] is None else f"{r['positions'] / r['train_seconds']:,.0f}",
                   f"{r['val_perplexity']:.3f}", f"{r['test_perplexity']:.3f}", f"{r['x_copy']:.3f}",
                   db(r["psnr_moving"]), f"{r['heldout_perplexity']:.3f}", f"{r['heldout_x_copy']:.3f}",
                   db(r["heldout_psnr_moving"])] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-models.md"))
    args = parser.parse_args()
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "params.yaml", "dvc.lock"], cwd=ROOT).returncode:
        sys.exit("models: params.yaml or dvc.lock differ from the commit; commit or restore them first "
                 "(each variant's run is undone with git checkout)")
    branch = current_branch()
    if branch is None:
        sys.exit("models: HEAD is detached; check out a branch first (each variant's run is undone onto it)")
    store = args.out.with_suffix(".json")
    rows = json.loads(store.read_text()) if store.exists() else {}
    for name in args.only:
        rows[name] = run_variant(name, branch)
        store.write_text(json.dumps(rows, indent=1) + "\n")
    ordered = [rows[name] for name in VARIANTS if name in rows]
    args.out.write_text("# The models on one budget (`python benchmarks/models.py`)\n\n"
                        + "\n".join(markdown(ordered)) + "\n")
    print("\n".join(markdown(ordered)))


if __name__ == "__main__":
    main()
