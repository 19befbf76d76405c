"""The device check: every heavy stage's code on one device at the paper's k, timed, and the
UCF-101 run (`profiles/ucf101.yaml`) projected stage by stage from the measured rates.

    python benchmarks/device_check.py                        # on a GPU machine: device=cuda, k=10,000
    python benchmarks/device_check.py --device cpu --smallest   # the CPU smoke run (the test suite runs it)

One command, made to run in a few minutes on a bare GPU machine that has PyTorch, h5py, OpenCV,
scikit-learn, SciPy, Pillow and tqdm but no PyAV, Hydra or DVC: the frames are made, not decoded
(a camera panning and zooming over scikit-learn's two sample photographs, at UCF-101's 320x240),
and written as the extract stage writes them; training runs through `train_model`, not the
stage script (which logs with DVCLive). pydantic travels as wheels: `benchmarks/device_wheels.sh`.

What it runs, on `--device`, with the profile's params and smaller sizes:
sample_patches, fit_codebook (Lloyd), encode (its codes checked against the CPU's on two
videos), train (bf16 on CUDA; then one `train.processes=1` launch under torchrun, the DDP path), the
same training of `model.name=transformer` (its steps timed beside the rCNN's, and its frame-by-frame
stepping on the kept keys and values checked against its full forward on the device),
train_decoder and evaluate, each through the stage's own `main` where it has one. It writes the
rates, the peak GPU memory of each stage and the projection into its section of `--out`.
"""

from __future__ import annotations

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # corpus.py, report.py beside this file

from corpus import HEIGHT, WIDTH, camera  # noqa: E402
from report import machine, num, table  # noqa: E402

from videolm.codes.codebook import Codebook  # noqa: E402
from videolm.codes.grids import load_code_grids  # noqa: E402
from videolm.config import Params  # noqa: E402
from videolm.data.frames import list_frames, write_frames  # noqa: E402
from videolm.device import resolve_device  # noqa: E402
from videolm.model.checkpoint import Checkpoint  # noqa: E402
from videolm.training.distributed import launch_torchrun  # noqa: E402
from videolm.training.train import train_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "ucf101.yaml"

# UCF-101, split 1 (Soomro et al. 2012): 13,320 clips, 27 h at 25 fps, 320x240; 9,537 training
# and 3,783 test clips. Frames are ~2.4M (27 h x 25 fps), shared out in proportion to the clips.
UCF101 = {"videos": 13_320, "frames": 2_430_000, "train_frames": 1_740_000, "test_frames": 690_000,
          "cells_per_frame": 40 * 30}

# The check's own sizes: (GPU check, smallest).
SIZES = {
    "full": dict(videos=24, frames=60, scale=1.0, k=10_000, n_train=200_000, lloyd_iter=3, steps=300,
                 batch=32, crop=16, decoder_steps=40, clips=20, ddp_steps=20),
    "smallest": dict(videos=6, frames=24, scale=0.25, k=64, n_train=2_000, lloyd_iter=2, steps=6,
                     batch=4, crop=4, decoder_steps=3, clips=3, ddp_steps=2),
}
START, END = "<!-- device-check:{}:start -->", "<!-- device-check:{}:end -->"


def photographs() -> list[np.ndarray]:
    """scikit-learn's two sample photographs (they ship in its wheel), gray uint8."""
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    return [cv2.cvtColor(cv2.imread(str(folder / name)), cv2.COLOR_BGR2GRAY) for name in ("china.jpg", "flower.jpg")]


def make_frames(folder: Path, n_videos: int, n_frames: int, scale: float, seed: int) -> None:
    """`n_videos` frames files, each a camera moving over a photograph, as extract_frames writes
    them (the last quarter of the videos validation and test, as a video split)."""
    rng = np.random.default_rng(seed)
    sources = photographs()
    width, height = round(WIDTH * scale), round(HEIGHT * scale)
    folder.mkdir(parents=True)
    for i in range(n_videos):
        source = sources[i % len(sources)]
        cam = camera(("pan", "zoom", "pan+zoom")[i % 3], 1, source.shape[1], source.shape[0], rng)
        frames = (cv2.resize(cv2.warpAffine(source, cam.window(t, n_frames, source.shape[1], source.shape[0]),
                                            (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                            borderMode=cv2.BORDER_REPLICATE), (width, height),
                             interpolation=cv2.INTER_AREA) for t in range(n_frames))
        part = "train" if i < n_videos * 3 // 4 else ("val" if i % 2 else "test")
        bounds = {"train": (n_frames, n_frames), "val": (0, n_frames), "test": (0, 0)}[part]
        write_frames(folder / f"v{i:03d}.h5", frames, lambda n, b=bounds: b,
                     {"source": f"v{i:03d}.avi", "fps": 25.0, "split_rule": "video", "part": part})


def stage(name: str):
    """The stage script `stages/<name>.py` as a module (its `main(params)` is the stage)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_params(work: Path, device: str, size: dict) -> Params:
    """The UCF-101 profile's params with the check's sizes, and every path inside `work`."""
    raw = yaml.safe_load(PROFILE.read_text())
    raw["device"], raw["workers"] = device, 0
    raw["paths"] = {key: str(work / value) for key, value in raw["paths"].items()}
    raw["patches"].update(n_train=size["n_train"], n_heldout=size["n_train"] // 10)
    raw["codebook"].update(k=size["k"], max_iter=size["lloyd_iter"])
    raw["train"].update(epochs=1, steps_per_epoch=size["steps"], batch_size=size["batch"], crop=size["crop"],
                        val_videos=2, loader_workers=0, checkpoint_every=0,
                        precision="bf16" if device == "cuda" else "fp32")
    raw["decoder"].update(steps=size["decoder_steps"], val_every=size["decoder_steps"])
    raw["eval"].update(clips=size["clips"], clip_stride=0)
    return Params.model_validate(raw)


class Timer:
    """Seconds and peak GPU memory of each stage, in order."""

    def __init__(self, device: torch.device):
        self.device, self.rows = device, {}

    def run(self, name: str, fn):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else None
        self.rows[name] = {"seconds": time.perf_counter() - start, "peak_gib": peak}
        print(f"device check: {name} in {self.rows[name]['seconds']:.1f} s", flush=True)
        return result


def codes_match_cpu(params: Params, work: Path) -> dict:
    """Encode two videos again on the CPU and compare with the device's code files."""
    from videolm.codes.encoding import encode_videos

    codebook = Codebook.load(params.paths.codebook)
    videos = list_frames(params.paths.frames)[:2]
    cpu_dir = work / "codes_cpu"
    cpu_dir.mkdir()
    encode_videos(videos, codebook, params.patches.stride, params.encode.chunk_frames, cpu_dir, 1, "cpu")
    device_grids = {g.video_id: g for g in load_code_grids(params.paths.codes)}
    same = total = 0
    for grid in load_code_grids(cpu_dir):
        a, b = grid.codes[:], device_grids[grid.video_id].codes[:]
        same, total = same + int((a == b).sum()), total + a.size
    return {"codes_compared": total, "codes_identical": same}


def ddp_probe(params_file: Path) -> None:
    """Under torchrun: `train_model` as one rank of a process group (nccl on CUDA, gloo on the CPU)."""
    params = Params.model_validate(json.loads(params_file.read_text()))
    grids = load_code_grids(params.paths.codes)
    train_model(grids, Codebook.load(params.paths.codebook), params)


def transformer_check(grids, codebook: Codebook, params: Params, device: torch.device, timer: Timer) -> dict:
    """Train `model.name=transformer` as the rCNN was; then on `device` score a validation clip
    in one forward and frame by frame on the kept keys and values: the largest difference."""
    transformer = params.model_copy(update={"model": params.model.model_copy(update={"name": "transformer"})})
    seconds = {}
    model, _ = timer.run("train (transformer)", lambda: train_model(grids, codebook, transformer, seconds=seconds))
    clip = torch.from_numpy(np.asarray(grids[-1].codes[:8], np.int64))[None].to(device)
    model.to(device).eval()
    with torch.no_grad():
        full, state, steps = model(clip)[0], None, []
        for t in range(clip.shape[1]):
            logits, _, state = model(clip[:, t:t + 1], state)
            steps.append(logits)
    return {"transformer_step_seconds": seconds["steps"],
            "transformer_stepping_error": float((torch.cat(steps, 1) - full).abs().max())}


def run_check(device_name: str, smallest: bool, seed: int = 0) -> tuple[dict, dict]:
    """Every stage on `device_name` at the check's sizes: (facts of the run, per-stage rows)."""
    size = SIZES["smallest" if smallest else "full"]
    device = resolve_device(device_name)
    facts = {"device": str(device), "size": "smallest" if smallest else "full", **size}
    with tempfile.TemporaryDirectory(prefix="videolm-device-check-") as tmp:
        work = Path(tmp)
        params = check_params(work, device.type, size)
        timer = Timer(device)
        timer.run("frames", lambda: make_frames(Path(params.paths.frames), size["videos"], size["frames"],
                                                size["scale"], seed))
        videos = list_frames(params.paths.frames)
        facts["frames"] = sum(v.n_frames for v in videos)
        facts["train_frames"] = sum(v.train_end for v in videos)
        facts["cells_per_frame"] = int(np.prod([(s - 8) // 8 + 1 for s in videos[0].frame_shape]))
        for name in ("sample_patches", "fit_codebook", "encode"):
            timer.run(name, lambda name=name: stage(name).main(params))
        facts.update(codes_match_cpu(params, work))
        grids = load_code_grids(params.paths.codes)
        codebook = Codebook.load(params.paths.codebook)
        seconds = {}
        model, _ = timer.run("train", lambda: train_model(grids, codebook, params, seconds=seconds))
        facts["train_step_seconds"] = seconds["steps"]
        Checkpoint(model.state_dict(), params.model.model_dump(), codebook.digest).save(params.paths.model)
        ddp = params.model_copy(update={"train": params.train.model_copy(
            update={"steps_per_epoch": size["ddp_steps"], "processes": 1})})
        params_file = work / "ddp.json"
        params_file.write_text(ddp.model_dump_json())
        code = timer.run("train under torchrun", lambda: launch_torchrun(1, __file__, ["--ddp-probe", str(params_file)]))
        if code:
            raise SystemExit(f"device check: the torchrun launch failed (exit {code}); its message is above")
        facts.update(transformer_check(grids, codebook, params, device, timer))
        for name in ("train_decoder", "evaluate"):
            timer.run(name, lambda name=name: stage(name).main(params))
        evaluated = json.loads((Path(params.paths.metrics) / "eval.json").read_text())
        facts["test_cells"], facts["gen_clips"] = evaluated["test_patches"], evaluated["gen_clips"]
        facts["perplexity"] = evaluated["model_perplexity"]
    return facts, timer.rows


def projection(facts: dict, rows: dict) -> list[list[str]]:
    """Per stage: the check's work and seconds, its rate, and the UCF-101 profile's work at that rate."""
    profile = yaml.safe_load(PROFILE.read_text())
    t, d, e = profile["train"], profile["decoder"], profile["eval"]
    cells = UCF101["cells_per_frame"]
    work = {  # stage: (unit, the check's amount, UCF-101's amount)
        "sample_patches": ("training frames read", facts["train_frames"], UCF101["train_frames"]),
        "fit_codebook": ("patch x centroid x iteration",
                         facts["n_train"] * facts["k"] * facts["lloyd_iter"],
                         profile["patches"]["n_train"] * profile["codebook"]["k"] * profile["codebook"]["max_iter"]),
        "encode": ("patches", facts["frames"] * facts["cells_per_frame"], UCF101["frames"] * cells),
        "train": ("crop cells x frames", facts["steps"] * facts["batch"] * facts["crop"] ** 2 * 8,
                  t["epochs"] * t["steps_per_epoch"] * t["batch_size"] * t["crop"] ** 2 * t["bptt"]),
        "train_decoder": ("steps", facts["decoder_steps"], d["steps"]),
        "evaluate": ("test cells scored", facts["test_cells"], UCF101["test_frames"] * cells),
    }
    out, total = [], 0.0
    for name, (unit, done, todo) in work.items():
        seconds = facts["train_step_seconds"] if name == "train" else rows[name]["seconds"]
        projected = seconds * todo / done
        total += projected
        peak = rows[name]["peak_gib"]
        out.append([name, f"{num(done)} {unit}", f"{seconds:.1f}", f"{num(done / seconds)}/s",
                    "–" if peak is None else f"{peak:.2f}", f"{num(todo)}", f"{projected / 60:.1f}"])
    out.append(["**total**", "", "", "", "", "", f"**{total / 60:.1f}**"])
    if e.get("clips"):
        out.append(["(evaluate's generation and filling: included above, on "
                    f"{facts['gen_clips']} clips here, {e['clips']} in the profile)", "", "", "", "", "", ""])
    return out


def report(facts: dict, rows: dict, started: tuple[float, float, float]) -> str:
    title = f"## {facts['device']}, `--{'smallest' if facts['size'] == 'smallest' else 'full'}` sizes"
    lines = [title, "", *(f"- {line}" for line in machine([f"h5py, OpenCV {cv2.__version__}"], started)),
             f"- the check: {facts['videos']} videos of {facts['frames'] // facts['videos']} frames "
             f"({facts['cells_per_frame']} cells a frame), k = {facts['k']:,}, {facts['n_train']:,} patches, "
             f"{facts['steps']} training steps of {facts['batch']} crops of {facts['crop']}x{facts['crop']} cells x 8 "
             f"frames; test perplexity after it {facts['perplexity']:.2f} (a few steps: a smoke figure)",
             f"- encode's codes against the CPU's on two videos: {facts['codes_identical']:,} of "
             f"{facts['codes_compared']:,} identical",
             f"- `model.name=transformer`, the same training: steps {facts['transformer_step_seconds']:.1f} s against "
             f"the rCNN's {facts['train_step_seconds']:.1f} s; its scores stepped frame by frame on the kept keys and "
             f"values differ from its full forward's by at most {facts['transformer_stepping_error']:.1e}", "",
             *table(["stage", "the check's work", "s", "rate", "peak GPU GiB", "UCF-101 (profile)", "projected min"],
                    projection(facts, rows)),
             *([] if facts["size"] != "smallest" else [
                 "", "At the smallest sizes the stages' fixed costs (starting worker processes, importing torch) "
                     "dominate: the projection above shows the arithmetic, not a time to plan by."]),
             "", "Other steps of the check (not projected): " + "; ".join(
                 f"{name} {row['seconds']:.1f} s" for name, row in rows.items()
                 if name in ("frames", "train under torchrun")) + ". extract_frames (PyAV decoding) is not in "
             "the check: its rate is the scale drill's (RESULTS.md), per core."]
    return "\n".join(lines)


def write_section(path: Path, key: str, body: str) -> None:
    """Put `body` in `path` between the markers of `key`, in place of what was there (else at the end)."""
    start, end = START.format(key), END.format(key)
    text = path.read_text() if path.exists() else "# The device check (`benchmarks/device_check.py`)\n"
    section = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu", "auto"), default="cuda")
    parser.add_argument("--smallest", action="store_true", help="the smallest sizes (the CPU smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS-gpu.md")
    parser.add_argument("--ddp-probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_probe:
        return ddp_probe(args.ddp_probe)
    started, threads = os.getloadavg(), torch.get_num_threads()
    facts, rows = run_check(args.device, args.smallest)
    torch.set_num_threads(threads)  # the machine's facts give torch's default (evaluate sets eval.threads)
    key = "cuda" if facts["device"].startswith("cuda") else "cpu"
    write_section(args.out, key, report(facts, rows, started))
    print(f"device check: {args.out} ({key} section)")


if __name__ == "__main__":
    main()
