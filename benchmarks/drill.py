"""Scale drill: the pipeline's stages, run as `dvc repro` runs them, on a corpus of many clips at
UCF-101's frame size with the paper's k, and what each stage costs.

    python benchmarks/drill.py                   # 200 clips of 5 s, k=10,000: the size RESULTS.md reports
    python benchmarks/drill.py --clips 6 --seconds 1 --k 64 --steps 2 --out /tmp/drill.md   # smoke size

The full size takes long, `encode` at k=10,000 most of it (benchmarks/RESULTS.md has each stage's
wall time). Run it on an idle machine: the table's "others" column says how idle it was.

What it does, and why this way:
- **Corpus.** `--clips` h264 clips of 320x240 at 25 fps, `--seconds` long: real footage under a
  moving camera, the same bytes for the same `--seed` (`corpus.py`).
- **Stages.** Each stage runs as a subprocess, `python stages/<stage>.py key=value ...`, in a
  fresh workspace holding a copy of the repository's `params.yaml` (stages read `./params.yaml`);
  every stage gets the same overrides (`overrides`), so the run is one consistent pipeline.
  `evaluate` is not run: at k=10,000 its generation and filling over every test clip would take
  longer than all the other stages together, and its cost is not the question here. Outputs of
  a previous run of the same stage are removed before each run, so no run pays for removing
  another's.
- **Data stages with 1 and 2 workers.** `extract_frames`, `sample_patches` and `encode` (the
  stages `workers` applies to) run three ways: `workers=2` (two spawned processes, one torch thread each);
  `workers=1` with `OMP_NUM_THREADS=1` (one process, one torch thread: what each worker is, the
  per-process reference for scaling); `workers=1` as shipped (one process, torch's default
  threads). `OMP_NUM_THREADS` binds torch's threads only, not FFmpeg's or OpenCV's (the corpus's
  clips have one slice a frame, so the slice-threaded decode runs on one thread anyway): the
  cores-busy column says what each run used. The outputs of the three are compared byte for byte.
- **Measures.** Each stage's wall time, the cores it kept busy and those other jobs took meanwhile,
  the peak RSS of its largest process and of all its processes together, and its outputs' bytes
  (`measure.py` says how each is taken and what it includes).
- **Train's time.** The train stage's last line says how long its steps and its validation took
  and how long it ran: the table splits its wall time by that line alone.

Results go to `benchmarks/RESULTS.md` (or `--out`), between the markers of `report.py`: the rest
of the file is kept, and `run.py` keeps this section when it rewrites the file.
"""

from __future__ import annotations

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
from corpus import FPS, HEIGHT, WIDTH, make_corpus
from measure import SAMPLE_S, Run, digest, disk_bytes, run_stage
from report import machine, spread, table, write_section

from videolm.config import load_params
from videolm.data.frames import list_frames
from videolm.errors import VideoLMError

ROOT = Path(__file__).resolve().parents[1]
PATCH = 8  # params.yaml's patches.size: 1,200 patch positions per 320x240 frame

# The three ways the data stages run: (name in the tables, `workers`, extra environment).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
WORKER_RUNS = [("2 workers", 2, {}), ("1 worker, 1 thread", 1, ONE_THREAD), ("1 worker, default threads", 1, {})]

# The train stage's last line: epochs run, steps an epoch, the seconds its steps and its validation
# took, and its seconds from its params loaded to its outputs written (`videolm.stage`), e.g. "train: 30 epochs of 200 steps (steps 300 s,
# validation 60 s); best epoch 28, val perplexity 4.98 in 379 s".
TRAIN_LINE = re.compile(r"^train: (\d+) epochs of (\d+) steps \(steps (\d+) s, validation (\d+) s\); .* in (\d+) s$",
                        re.MULTILINE)


def overrides(args) -> list[str]:
    """What every stage is run with, on top of `params.yaml`: the corpus at full size, the
    paper's k with Lloyd (where MiniBatchKMeans takes far longer at k=10,000), a few training
    steps, and a split by video whose validation part is small (by default the one video a
    split by video keeps at least: validation scores whole frames at k=10,000 after the epoch,
    slowly next to the steps)."""
    return ["data.dir=videos", "data.scale=1.0", "data.split=video", f"data.val_fraction={args.val_fraction}",
            f"codebook.k={args.k}", "codebook.method=lloyd", f"codebook.max_iter={args.iterations}",
            f"patches.n_train={n_train(args)}", f"patches.n_heldout={n_train(args) // 10}",
            "train.epochs=1", f"train.steps_per_epoch={args.steps}"]


def n_train(args) -> int:
    """Patches to fit the codebook on: `--patches`, else 10 per centroid (100,000 at k=10,000);
    a tenth as many held out."""
    return args.patches or 10 * args.k


@dataclass
class Row:
    """A stage's runs in one setting, for the table: `amount` units of work per run."""

    stage: str
    setting: str
    runs: list[Run]
    amount: float
    unit: str
    disk: int
    note: str


def drill(args, workspace: Path) -> tuple[dict, list[Row], dict[str, bool]]:
    """Make the corpus in `workspace`, run every stage on it; (corpus facts, rows, whether each
    data stage's outputs were the same bytes in every worker setting)."""
    common = overrides(args)
    train = load_params(ROOT, common).train  # also checks the overrides before any work
    corpus = make_corpus(workspace / "videos", args.clips, args.seconds, args.seed)
    shutil.copyfile(ROOT / "params.yaml", workspace / "params.yaml")
    data, metrics = workspace / "data", workspace / "metrics"
    outputs = {"extract_frames": [data / "frames", metrics / "frames.json"], "sample_patches": [data / "patches.h5"],
               "fit_codebook": [data / "codebook.h5", metrics / "codebook.json"],
               "encode": [data / "codes", metrics / "encode.json"],
               "train": [workspace / "models", workspace / "dvclive", metrics / "train.json"]}

    def run(stage: str, workers: int = 1, env: dict | None = None) -> Run:
        for path in outputs[stage]:  # a previous run's (of this drill, in its own workspace)
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        print(f"{stage} workers={workers} {' '.join(f'{k}={v}' for k, v in (env or {}).items())}", flush=True)
        return run_stage(workspace, stage, [*common, f"workers={workers}"], workspace / f"{stage}.log", env)

    def worker_rows(stage: str, amount: float, unit: str, note: str) -> tuple[list[Row], bool]:
        """The stage in each worker setting, interleaved repeat by repeat; same bytes in all?"""
        runs, digests = defaultdict(list), set()
        for _ in range(args.repeats):
            for setting, workers, env in WORKER_RUNS:
                runs[setting].append(run(stage, workers, env))
                digests.add(digest(outputs[stage][0]))
        disk = disk_bytes(outputs[stage])
        return [Row(stage, setting, runs[setting], amount, unit, disk, note) for setting, *_ in WORKER_RUNS], \
            len(digests) == 1

    rows, same = [], {}
    frames = corpus["frames"]
    new, same["extract_frames"] = worker_rows("extract_frames", frames, "frames/s", "decode + gzip HDF5 writing")
    rows += new
    split = json.loads((metrics / "frames.json").read_text())
    n_patches = n_train(args) + n_train(args) // 10
    new, same["sample_patches"] = worker_rows(
        "sample_patches", split["train_frames"] + split["val_frames"], "frames/s",
        f"{n_patches:,} patches (training + held-out) and the std, in one read of the {split['train_frames']:,} "
        f"training and {split['val_frames']:,} validation frames")
    rows += new
    rows.append(Row("fit_codebook", "as shipped (no workers)", [run("fit_codebook") for _ in range(args.repeats)],
                    n_train(args) * args.iterations, "patches/s", disk_bytes(outputs["fit_codebook"]),
                    f"Lloyd, k={args.k:,}, {args.iterations} iterations over {n_train(args):,} patches (patch-centroid "
                    f"searches per second of the stage; its quality pass included)"))
    positions = frames * (HEIGHT // PATCH) * (WIDTH // PATCH)
    new, same["encode"] = worker_rows("encode", frames, "frames/s",
                                      f"k={args.k:,}: {positions / frames:,.0f} patches a frame, "
                                      f"{positions:,} in all")
    rows += new
    per_step = train.batch_size * train.bptt * train.crop ** 2
    trained = args.steps * per_step
    # Validation scores the validation frames of the videos that have some, running the model
    # over each from its first frame (`scoring.predict_video`): in a split by video, the same frames.
    videos = [v for v in list_frames(outputs["extract_frames"][0]) if v.val_end > v.train_end]
    val_positions = sum(v.val_end - max(v.train_end, 1) for v in videos) * positions // frames  # not frame 0
    run_positions = sum(v.val_end - 1 for v in videos) * positions // frames
    runs = [run("train") for _ in range(args.repeats)]
    rows.append(Row("train", "as shipped (torch's default threads)", runs, trained, "positions/s",
                    disk_bytes(outputs["train"]),
                    f"{args.steps} steps of {train.batch_size} crops of {train.bptt} frames x {train.crop}x{train.crop} "
                    f"cells = {trained:,} positions, over the stage's whole time; "
                    + train_parts(runs, per_step, val_positions, run_positions)))
    return corpus, rows, same


def train_parts(runs: list[Run], per_step: int, val_positions: int, run_positions: int) -> str:
    """Where the train stage's time went (medians over runs), from its last line alone
    (`TRAIN_LINE`): its steps, its validation (`val_positions` scored an epoch, the model run
    over `run_positions`), the rest of the time it printed (opening the code grids, each epoch's
    end, writing its outputs), and its wall time before that (Python's start-up, imports, params).
    Left out if a run's log has no such line."""
    parts = []
    for run in runs:
        lines = TRAIN_LINE.findall(run.log)
        if not lines:
            return "(its last line's times were not found: no split of its time)"
        epochs, steps, step_s, val_s, printed_s = (int(x) for x in lines[-1])
        parts.append((epochs, epochs * steps, step_s, val_s, printed_s, run.wall))
    epochs, steps, step_s, val_s, printed_s, wall = (statistics.median(p[i] for p in parts) for i in range(6))
    per_s = lambda n, s: f"{n / s:,.0f}/s" if s >= 5 else "too short to rate to the second"
    return (f"of its {wall:.0f} s, the steps took {step_s:.0f} s ({per_s(steps * per_step, step_s)}), validation "
            f"{val_s:.0f} s (it scores {epochs * val_positions:,.0f} positions, running the model over "
            f"{epochs * run_positions:,.0f}: {per_s(epochs * run_positions, val_s)}), the rest of the "
            f"{printed_s:.0f} s it printed (opening the code grids, writing its outputs) "
            f"{printed_s - step_s - val_s:.0f} s, and start-up (Python, imports, params) {wall - printed_s:.0f} s "
            f"(times printed to the second)")


def rate(row: Row) -> float:
    return row.amount / statistics.median(run.wall for run in row.runs)


def report(args, argv: list[str], corpus: dict, rows: list[Row], same: dict[str, bool],
           load_at_start: tuple[float, float, float]) -> str:
    mib = lambda n: f"{n / 2**20:,.1f} MiB"
    lines = [f"## Scale drill: {corpus['clips']} clips of {WIDTH}x{HEIGHT}, {args.seconds:g} s, k={args.k:,}", "",
             f"`{shlex.join(['python', 'benchmarks/drill.py', *argv])}` (median of {args.repeats} run(s) of each "
             f"stage; min..max in brackets).", "",
             f"Corpus: {corpus['clips']} h264 clips of {WIDTH}x{HEIGHT} at {FPS} fps, {corpus['frames_per_clip']} "
             f"frames each ({corpus['frames']:,} frames, {mib(corpus['bytes'])}), each a crop window panning, "
             f"zooming or both over one of the sample videos as it plays ({', '.join(corpus['sources'])} in turn), "
             f"seed {args.seed}; written in {corpus['seconds']:.0f} s (not a pipeline stage).", "",
             f"Every stage ran as `python stages/<stage>.py {' '.join(overrides(args))} workers=<n>` in a "
             f"workspace holding a copy of `params.yaml`. `evaluate` was not run (at k=10,000 it would outlast the "
             f"rest; not what this measures). Wall: the stage process's start to exit (imports and worker start-up "
             f"included). Cores busy: its CPU time (workers included) over its wall time; others: the CPU time the "
             f"rest of the machine took meanwhile, over the same wall time (near 0 on an idle machine: otherwise "
             f"the stage shared the cores, and its rates and the ratios below understate it). Peak RSS: of its "
             f"largest process (exact), and of all its processes together (their RSS summed, sampled every "
             f"{SAMPLE_S} s; at least the largest's). Disk: its outputs' bytes.", ""]
    lines += table(["stage", "setting", "wall s", "throughput", "cores busy", "others (cores)",
                    "peak RSS, largest process (MiB)", "peak RSS, all processes (MiB)", "disk", "notes"],
                   [[row.stage, row.setting, spread([r.wall for r in row.runs]),
                     f"{spread([row.amount / r.wall for r in row.runs])} {row.unit}",
                     spread([r.cpu / r.wall for r in row.runs]), spread([r.others / r.wall for r in row.runs]),
                     spread([r.rss for r in row.runs]), spread([r.rss_all for r in row.runs]), mib(row.disk), row.note]
                    for row in rows])
    ratios = []
    for stage in ("extract_frames", "sample_patches", "encode"):
        by = {row.setting: rate(row) for row in rows if row.stage == stage}
        one, default = by["2 workers"] / by["1 worker, 1 thread"], by["2 workers"] / by["1 worker, default threads"]
        verdict = lambda ratio: "met" if ratio >= 1.7 else "**missed**"
        ratios.append([stage, f"{one:.2f}x", f"{default:.2f}x",
                       f"{verdict(one)} against 1 thread, {verdict(default)} against default threads",
                       "yes" if same[stage] else "**no**"])
    lines += ["", *table(["data stage", "2 workers / 1 worker, 1 thread", "2 workers / 1 worker, default threads",
                          "target: 2 workers >= 1.7x 1 worker", "outputs the same bytes in every setting"],
                         ratios)]
    libraries = [f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})",
                 f"OpenCV {cv2.__version__}"]
    lines += ["", "Machine:", ""] + [f"- {fact}" for fact in machine(libraries, load_at_start)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="clips in the corpus (default 200)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per clip, at 25 fps (default 5)")
    parser.add_argument("--k", type=int, default=10_000, help="codebook size (default 10,000, the paper's)")
    parser.add_argument("--patches", type=int, default=0, help="patches.n_train (default 10 k; n_heldout a tenth)")
    parser.add_argument("--iterations", type=int, default=10, help="Lloyd iterations (default 10)")
    parser.add_argument("--steps", type=int, default=50, help="training steps, one epoch (default 50)")
    parser.add_argument("--val-fraction", type=float, default=0.005,
                        help="data.val_fraction: share of the clips for validation (default 0.005: 1 of 200, "
                             "the least a split by video keeps)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each stage in each setting (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the corpus's seed (default 0)")
    parser.add_argument("--workdir", type=Path, help="a new folder to work in, kept afterwards "
                                                     "(default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    for name in ("k", "iterations", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.clips < 3:
        parser.error("--clips must be at least 3: the split by video needs a test, a validation and a training clip")
    if args.patches and args.patches < max(args.k, 10):
        parser.error(f"--patches {args.patches} must be at least --k {args.k} (and 10)")
    if args.workdir and args.workdir.exists():
        parser.error(f"--workdir {args.workdir}: exists already (give a new folder)")
    load_at_start = os.getloadavg()
    try:
        load_params(ROOT, overrides(args))  # the overrides checked before any work
        if args.workdir:
            args.workdir.mkdir(parents=True)
            corpus, rows, same = drill(args, args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="videolm-drill-") as tmp:
                corpus, rows, same = drill(args, Path(tmp))
    except (VideoLMError, RuntimeError) as err:  # a missing sample, a bad override; a stage that failed
        parser.exit(2, f"error: {err}\n")
    text = report(args, argv, corpus, rows, same, load_at_start)
    write_section(args.out, text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
