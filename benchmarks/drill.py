"""Scale drill (issue 15): the pipeline's stages, run as `dvc repro` runs them, on a corpus of many
clips at UCF-101's frame size with the paper's k, and what each stage costs.

    python benchmarks/drill.py                   # 200 clips of 5 s, k=10,000 (about 50 minutes on 2 cores)
    python benchmarks/drill.py --clips 6 --seconds 1 --k 64 --steps 2 --out /tmp/drill.md   # smoke size, ~1 min

The full size's time is an estimate from a run of 12 clips of 5 s (4 minutes, on a machine
another job used at times): `encode` three times over 25,000 frames at k=10,000 is about 42
minutes of it. Run it on an idle machine: the table's "others" column says how idle it was.

What it does, and why this way:
- **Corpus.** `--clips` h264 clips of 320x240 at 25 fps, `--seconds` long, written with PyAV:
  each is a camera moving over one of the real sample videos (`videolm.data.samples`) as it plays,
  a crop window that pans, zooms or both, with its own start frame, path, speed and zoom drawn
  from `--seed`. Real footage with real camera motion decodes, compresses and quantizes like
  UCF-101's clips; a synthetic texture would not. The corpus is the same bytes on every run
  (for one x264 version): see `write_clip` for the two x264 settings that takes.
- **Stages.** Each stage runs as a subprocess, `python stages/<stage>.py key=value ...`, in a
  fresh workspace holding a copy of the repository's `params.yaml` (stages read `./params.yaml`);
  every stage gets the same overrides (`overrides`), so the run is one consistent pipeline.
  `evaluate` is not run: at k=10,000 its generation and filling over every test clip of 40
  test videos would take longer than all the other stages together, and its cost is not the
  question here. Outputs of a previous run of the same stage are removed before each run, so
  no run pays for removing another's.
- **Data stages with 1 and 2 workers.** `extract_frames` and `encode` (the stages `workers`
  applies to) run three ways: `workers=2` (two spawned processes, one torch thread each);
  `workers=1` with `OMP_NUM_THREADS=1` (one process, one torch thread: what each worker is, the
  per-process reference for scaling); `workers=1` as shipped (one process, torch's default
  threads, 2 here). `OMP_NUM_THREADS` binds torch's threads only, not FFmpeg's or OpenCV's
  (the corpus's clips have one slice a frame, so the slice-threaded decode runs on one thread
  anyway): the cores-busy column says what each run used. The outputs of the three are
  compared byte for byte.
- **Measures.** Wall time from the stage's start to its exit (Python start-up, imports, and
  the workers' start-up included: what a user waits for); CPU time over wall time (the cores it
  kept busy), and the machine's other CPU time over the same wall time (what other jobs took:
  near 0 on an idle machine); the peak RSS of its largest process (`os.wait4`, exact, through `LAUNCHER`
  as in `memory.py`) and of all its processes together (the stage and its workers, their RSS
  summed every `SAMPLE_S` from /proc, about 2 ms of one core per sample here: it can miss a
  short peak, so the largest process's exact peak is its floor; and shared pages count once
  per process, so it overstates what they hold together); the bytes of its outputs.

Results go to `benchmarks/RESULTS.md` (or `--out`), between `MARK_START` and `MARK_END`: the
rest of the file is kept, and `run.py` keeps this section when it rewrites the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

import videolm  # noqa: F401 (first: OpenMP's passive waiting, as the stages get it)
from videolm.config import load_params
from videolm.data.frames import list_frames
from videolm.data.samples import find_sample_files
from videolm.errors import VideoLMError

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 320, 240, 25  # UCF-101's frame size and rate
PATCH = 8  # params.yaml's patches.size: 1,200 patch positions per 320x240 frame
MARK_START, MARK_END = "<!-- drill:start -->", "<!-- drill:end -->"
SAMPLE_S = 0.2  # seconds between two samples of a stage's processes' summed RSS
PAGE = os.sysconf("SC_PAGE_SIZE")

# The three ways the data stages run: (name in the tables, `workers`, extra environment).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
WORKER_RUNS = [("2 workers", 2, {}), ("1 worker, 1 thread", 1, ONE_THREAD), ("1 worker, default threads", 1, {})]

# argv[1:] is the command: run it with its stdout and stderr on ours (stderr), then print its
# peak RSS (KiB: the largest of it and its reaped workers) and CPU seconds (user, system; its
# workers included). As `memory.py`'s launcher, and for its reason: a child's `ru_maxrss`
# starts from the size of the process it was spawned from, so the stage is spawned from this
# bare interpreter, not from the drill's process.
LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, 2, 1)])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, usage.ru_utime, usage.ru_stime)
sys.exit(os.waitstatus_to_exitcode(status))
"""


# ---------------------------------------------------------------- the corpus


def load_sources() -> list[tuple[str, np.ndarray]]:
    """(name, (T, H, W, 3) uint8 RGB frames) of every installed sample video, in order."""
    sources = []
    for path in find_sample_files():
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        sources.append((path.name, np.stack(frames)))
    return sources


@dataclass(frozen=True)
class Camera:
    """One clip's camera over a source video: at each frame a 320x240 window of `scale` source
    pixels per output pixel, whose top-left corner lies at `place` (0..1, x and y) of the room
    the window leaves in the source frame. Scale and place move from their first to their last
    value with an ease-in, ease-out curve (a camera starts and stops smoothly). The source plays
    from `start`, forward then backward at its ends, so that no frame jumps."""

    kind: str  # pan, zoom or pan+zoom
    start: int
    scale: tuple[float, float]
    place: tuple[tuple[float, float], tuple[float, float]]

    def window(self, t: int, n_frames: int, width: int, height: int) -> np.ndarray:
        """The (2, 3) affine map from output pixels to source pixels at frame t of n_frames."""
        ease = 0.5 - 0.5 * math.cos(math.pi * t / max(n_frames - 1, 1))
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * ease
        (x0, y0), (x1, y1) = self.place
        x = (x0 + (x1 - x0) * ease) * (width - WIDTH * scale)
        y = (y0 + (y1 - y0) * ease) * (height - HEIGHT * scale)
        return np.array([[scale, 0, x], [0, scale, y]], np.float64)

    def source_frame(self, t: int, n_source: int) -> int:
        period = 2 * (n_source - 1)
        i = (self.start + t) % period
        return i if i < n_source else period - i


def camera(kind: str, n_source: int, width: int, height: int, rng: np.random.Generator) -> Camera:
    """A random camera of `kind` over a width x height source: the window keeps within the
    frame, between half and 95% of the largest 4:3 window, so that it always has room to move."""
    largest = 0.95 * min(width / WIDTH, height / HEIGHT)
    low, high = largest / 2, largest
    if kind == "pan":  # a fixed zoom with room to pan: in the lower half of the range
        scale = (rng.uniform(low, (low + high) / 2),) * 2
    else:  # zoom in or out across most of the range
        scale = (low + (high - low) * rng.uniform(0, 0.3), high - (high - low) * rng.uniform(0, 0.3))
        scale = scale if rng.random() < 0.5 else scale[::-1]
    first = tuple(rng.uniform(0, 1, 2))
    last = tuple(rng.uniform(0, 1, 2)) if kind != "zoom" else first  # zoom alone: about a fixed point
    return Camera(kind, int(rng.integers(n_source)), scale, (first, last))


def write_clip(path: Path, source: np.ndarray, cam: Camera, n_frames: int) -> None:
    """An h264 clip of the camera's view of `source` (T, H, W, 3), x264's default settings but two:
    - one thread: x264's output depends on its thread count, which follows the machine's cores
      by default (and one thread is also the fastest here at this size: 500 frames/s against 350
      with 2);
    - no macroblock-tree rate control (`mbtree=0`): with it, the same frames gave other bytes
      from one run to the next within one process, even on one thread (PyAV 18's x264: of 20
      encodings of 10-frame clips, 16 distinct files for one clip; without it, 20 identical
      files for every clip, and 5 of 5 at 125 frames)."""
    n_source, height, width = source.shape[:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"threads": "1", "x264-params": "mbtree=0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for t in range(n_frames):
            view = cv2.warpAffine(source[cam.source_frame(t, n_source)], cam.window(t, n_frames, width, height),
                                  (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(view, format="rgb24")))
        container.mux(stream.encode())


def make_corpus(folder: Path, clips: int, seconds: float, seed: int) -> dict:
    """`clips` clips `folder/clipNNN.mp4` of `seconds` each, the same bytes for the same
    arguments: clip i films source i mod 3 with the camera kind (i // 3) mod 3, so every
    source and kind is used evenly, and draws the rest from the seed (seed, i)."""
    folder.mkdir(parents=True)
    n_frames = round(seconds * FPS)
    if n_frames < 2:
        raise VideoLMError(f"--seconds {seconds}: at least 2 frames are needed ({2 / FPS} s at {FPS} fps)")
    start = time.perf_counter()
    sources = load_sources()
    kinds = ["pan", "zoom", "pan+zoom"]
    for i in range(clips):
        name, frames = sources[i % len(sources)]
        rng = np.random.default_rng([seed, i])
        cam = camera(kinds[i // len(sources) % len(kinds)], len(frames), frames.shape[2], frames.shape[1], rng)
        write_clip(folder / f"clip{i:03d}.mp4", frames, cam, n_frames)
    return {"clips": clips, "frames": clips * n_frames, "frames_per_clip": n_frames, "bytes": disk_bytes([folder]),
            "seconds": time.perf_counter() - start, "sources": [name for name, _ in sources]}


# ---------------------------------------------------------------- running a stage


def descendants(root: int) -> list[int]:
    """Every living descendant of process `root`, from the parent links in /proc."""
    children = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        found += (kids := children.get(todo.pop(), []))
        todo += kids
    return found


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):  # ended meanwhile
        return 0


class TreePeak(threading.Thread):
    """The peak of the summed RSS of a process's descendants, sampled every `SAMPLE_S` until `stop`."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.peak, self.done = root, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            self.peak = max(self.peak, sum(rss_bytes(pid) for pid in descendants(self.root)))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One run of a stage: wall and CPU seconds, the CPU seconds other processes took meanwhile
    (the machine's busy time less the stage's), peak RSS (MiB) of its largest process and of all
    its processes together (sampled), and what it printed."""

    wall: float
    cpu: float
    others: float
    rss: float
    rss_all: float
    log: str


def run_stage(workspace: Path, stage: str, overrides: list[str], env: dict[str, str], log: Path) -> Run:
    """`python stages/<stage>.py <overrides>` with cwd `workspace` and `env` added to ours,
    its output to `log`; an error naming the command and showing the log's end if it fails."""
    command = [sys.executable, str(ROOT / "stages" / f"{stage}.py"), *overrides]
    with log.open("w") as err:
        start, busy = time.perf_counter(), busy_cpu_seconds()
        launcher = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, *command], cwd=workspace,
                                    env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=err, text=True)
        sampler = TreePeak(launcher.pid)
        sampler.start()
        out, _ = launcher.communicate()
        wall, busy = time.perf_counter() - start, busy_cpu_seconds() - busy
        rss_all = sampler.stop()
    if launcher.returncode:
        shown = " ".join(f"{k}={v}" for k, v in env.items()) + (" " if env else "")
        raise RuntimeError(f"{shown}{shlex.join(command)} (in {workspace}) exited with {launcher.returncode}:\n"
                           f"{log.read_text()[-3000:]}")
    maxrss, user, system = out.split()
    rss, cpu = int(maxrss) / 1024, float(user) + float(system)  # ru_maxrss is in KiB on Linux
    return Run(wall, cpu, max(0.0, busy - cpu), rss, max(rss, rss_all / 2**20), log.read_text())  # all >= largest


def disk_bytes(paths: list[Path]) -> int:
    """Bytes of the files at `paths` (files, or folders searched recursively)."""
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
    return sum(p.stat().st_size for p in files)


def digest(folder: Path) -> str:
    """md5 over the names and bytes of a folder's files: equal for byte-identical outputs."""
    md5 = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        md5.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return md5.hexdigest()


# ---------------------------------------------------------------- the drill


def overrides(args) -> list[str]:
    """What every stage is run with, on top of `params.yaml`: the corpus at full size, the
    paper's k with Lloyd (minutes where MiniBatchKMeans takes far longer at k=10,000), a few
    training steps, and a split by video whose validation part is small (by default the one
    video a split by video keeps at least: validation scores whole frames at k=10,000 after
    the epoch: 10,000 to 19,000 positions/s measured here, with and without another job)."""
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
        return run_stage(workspace, stage, [*common, f"workers={workers}"], env or {}, workspace / f"{stage}.log")

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
    rows.append(Row("sample_patches", "as shipped (no workers)", [run("sample_patches") for _ in range(args.repeats)],
                    n_patches, "patches/s", disk_bytes(outputs["sample_patches"]),
                    f"{n_patches:,} patches (training + held-out); reads the {split['train_frames']:,} training "
                    f"frames twice (std, then patches) and the {split['val_frames']:,} validation frames"))
    rows.append(Row("fit_codebook", "as shipped (no workers)", [run("fit_codebook") for _ in range(args.repeats)],
                    n_train(args) * args.iterations, "patches/s", disk_bytes(outputs["fit_codebook"]),
                    f"Lloyd, k={args.k:,}, {args.iterations} iterations over {n_train(args):,} patches (patch-centroid "
                    f"searches per second of the stage; its quality pass included)"))
    positions = frames * (HEIGHT // PATCH) * (WIDTH // PATCH)
    new, same["encode"] = worker_rows("encode", frames, "frames/s",
                                      f"k={args.k:,}: {positions / frames:,.0f} patches a frame, "
                                      f"{positions:,} in all")
    rows += new
    trained = args.steps * train.batch_size * train.bptt * train.crop ** 2
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
                    + train_parts(runs, args.steps, trained, val_positions, run_positions)))
    return corpus, rows, same


STEPS_DONE = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")  # tqdm's "20/20 [00:17<": elapsed at the end
EPOCHS_IN = re.compile(r"^train: \d+ epochs in (\d+) s", re.MULTILINE)  # the train stage's last line


def train_parts(runs: list[Run], steps: int, trained: int, val_positions: int, run_positions: int) -> str:
    """Where the train stage's time went (medians over runs), from what it printed: its last
    line's seconds from the start of training to the end, and the epoch progress bar's elapsed
    time at its last step (both to the second). Left out if either is not found."""
    parts = []
    for run in runs:
        bars = [m for m in STEPS_DONE.finditer(run.log) if int(m[1]) == int(m[2]) == steps]
        total = EPOCHS_IN.search(run.log)
        if not bars or not total:
            return "(its printed times were not found: no split of its time)"
        hours, minutes, seconds = (int(x or 0) for x in bars[-1].groups()[2:])
        parts.append((3600 * hours + 60 * minutes + seconds, int(total[1]), run.wall))
    step_s, train_s, wall = (statistics.median(p[i] for p in parts) for i in range(3))
    val_s = train_s - step_s
    per_s = lambda n, s: f"{n / s:,.0f}/s" if s >= 5 else "too short to rate to the second"
    return (f"of its {wall:.0f} s, the steps took {step_s:.0f} s by its progress bar "
            f"({per_s(trained, step_s)}), validation and the epoch's end {val_s:.0f} s (it scores "
            f"{val_positions:,} positions, running the model over {run_positions:,}: "
            f"{per_s(run_positions, val_s)}), and start-up and opening the code grids "
            f"{wall - train_s:.0f} s (times printed to the second)")


# ---------------------------------------------------------------- the report


def num(value: float) -> str:
    """A figure to 3 significant digits below 100, else a whole number with thousands separated (as `run.py`)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def spread(values: list[float]) -> str:
    """median [min..max]"""
    return f"{num(statistics.median(values))} [{num(min(values))}..{num(max(values))}]"


def rate(row: Row) -> float:
    return row.amount / statistics.median(run.wall for run in row.runs)


def machine(load_at_start: tuple[float, float, float]) -> list[str]:
    import torch  # here, not at the top: the drill's own process has no use for it otherwise

    line = lambda prefix: next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                                if l.startswith(prefix)), "unknown")
    memory = os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30
    return [f"CPU: {line('model name')}; cores (affinity): {len(os.sched_getaffinity(0))}; memory {memory:.1f} GiB",
            f"torch {torch.__version__}, {torch.get_num_threads()} threads by default; numpy {np.__version__}; "
            f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}); OpenCV {cv2.__version__}",
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; niceness {os.nice(0)}; load average "
            f"(1, 5, 15 min) at the start {', '.join(f'{x:.2f}' for x in load_at_start)}, at the end "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"Python {platform.python_version()} on {platform.platform()}"]


def report(args, argv: list[str], corpus: dict, rows: list[Row], same: dict[str, bool],
           load_at_start: tuple[float, float, float]) -> str:
    mib = lambda n: f"{n / 2**20:,.1f} MiB"
    lines = [f"## Scale drill (issue 15): {corpus['clips']} clips of {WIDTH}x{HEIGHT}, {args.seconds:g} s, "
             f"k={args.k:,}", "",
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
             f"{SAMPLE_S} s; at least the largest's). Disk: its outputs' bytes.", "",
             "| stage | setting | wall s | throughput | cores busy | others (cores) | peak RSS, largest process (MiB) "
             "| peak RSS, all processes (MiB) | disk | notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        rates = [row.amount / run.wall for run in row.runs]
        lines.append(f"| {row.stage} | {row.setting} | {spread([r.wall for r in row.runs])} "
                     f"| {spread(rates)} {row.unit} | {spread([r.cpu / r.wall for r in row.runs])} "
                     f"| {spread([r.others / r.wall for r in row.runs])} "
                     f"| {spread([r.rss for r in row.runs])} | {spread([r.rss_all for r in row.runs])} "
                     f"| {mib(row.disk)} | {row.note} |")
    lines += ["", "| data stage | 2 workers / 1 worker, 1 thread | 2 workers / 1 worker, default threads "
                  "| issue 15's target: 2 workers >= 1.7x 1 worker | outputs the same bytes in every setting |",
              "|---|---|---|---|---|"]
    for stage in ("extract_frames", "encode"):
        by = {row.setting: rate(row) for row in rows if row.stage == stage}
        one, default = by["2 workers"] / by["1 worker, 1 thread"], by["2 workers"] / by["1 worker, default threads"]
        verdict = lambda ratio: "met" if ratio >= 1.7 else "**missed**"
        lines.append(f"| {stage} | {one:.2f}x | {default:.2f}x | {verdict(one)} against 1 thread, "
                     f"{verdict(default)} against default threads | {'yes' if same[stage] else '**no**'} |")
    lines += ["", "Machine:", ""] + [f"- {fact}" for fact in machine(load_at_start)]
    return "\n".join(lines) + "\n"


def write_section(path: Path, body: str) -> None:
    """Put `body` between the drill's markers in `path`: in place of the section there, else at
    the end; the rest of the file is kept as it is."""
    section = f"{MARK_START}\n{body.rstrip()}\n{MARK_END}\n"
    text = path.read_text() if path.exists() else ""
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(MARK_END):].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + section
    path.write_text(text)


def kept_section(path: Path) -> str:
    """The drill's section of `path` with its markers, after a blank line; "" if it has none
    (what `run.py` appends to the table it writes, so that rewriting the file keeps it)."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(MARK_START), text.find(MARK_END)
    return "\n" + text[start:end + len(MARK_END)] + "\n" if start >= 0 and end > start else ""


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
