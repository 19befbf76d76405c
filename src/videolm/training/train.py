"""The training loop: truncated BPTT on random crops, validation on whole frames.

Each epoch is `steps_per_epoch` batches of random crops (`CodeGridDataset`), then the
validation part is scored on whole frames with the state carried through each video.
The kept weights are those of the epoch with the best validation loss (test frames are
never looked at), and training stops early after `patience` epochs without progress.

A loss that has diverged (nan, inf, or beyond `MAX_LOSS`) stops training at once with a
`TrainingError`: weights that diverged, or the untrained ones, are never returned as a model.

Given a resume path, the run saves a `TrainState` at each epoch end (and every
`checkpoint_every` steps) and, started again with the same params and data, continues from the
last one to the same final bits. Saving draws no random numbers, so a run that saves states
computes exactly what one that does not computes.

With `train.own_predictions` > 0 the inputs of each step are partly the model's own: a pass
without gradients draws a code for every cell from its prediction, and a fraction of the input
cells are replaced by them (`with_own_predictions`). These draws come from a generator seeded
by (seed, step, rank), not from torch's: a run with it off draws exactly what it drew before
the option existed, and a resumed run draws what the stopped one would have, with nothing saved.

Under torchrun (`distributed.py`) each of the N ranks trains a DistributedDataParallel copy on
its 1/N of every global batch of `train.batch_size` crops, so the course is that of one process
with the same batch (up to float sums and dropout masks); validation videos are shared out and
their scores summed. The code grids are read from their files as crops are drawn
(`codes.H5Codes`), in `train.loader_workers` DataLoader workers if asked.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid
from videolm.config import Params
from videolm.device import resolve_device
from videolm.errors import VideoLMError
from videolm.evaluation.scoring import score_part
from videolm.model.build import build_model
from videolm.model.linear_ce import IGNORE, sample_linear
from videolm.training.crops import CodeGridDataset, CropSampler
from videolm.training.distributed import Ranks
from videolm.training.schedule import lr_schedule
from videolm.training.state import TrainState

log = logging.getLogger(__name__)

# Nats per code beyond which the perplexity overflows a float (~709.8). A loss there (or a nan or
# inf one) has diverged: guessing uniformly costs log(k) <= 11.1, and no run that learns comes near.
MAX_LOSS = math.log(sys.float_info.max)


class TrainingError(VideoLMError):
    """Training cannot succeed with these params: the loss has diverged."""


HASH_FRAMES = 256  # frames of codes hashed at a time by `run_digest`


def seed_everything(seed: int, threads: int = 0, device: torch.device = torch.device("cpu")) -> None:
    """Seed torch and ask for deterministic kernels. On CUDA, an op without a deterministic kernel
    warns instead of stopping the run (the CPU path, the tested one, has one for every op)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if threads:
        torch.set_num_threads(threads)


def make_optimizer(model: torch.nn.Module, params: Params) -> torch.optim.Optimizer:
    t = params.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    opt = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return opt(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def without_border(targets: torch.Tensor, margin: int) -> torch.Tensor:
    """Targets (..., H, W) with the `margin` cells along each edge set to the ignored index.

    The recurrence is 1x1, so a prediction sees only `model.context_radius` cells around it
    at every step; cells at least that far inside the crop see exactly what they would see
    in the whole frame, and only they are scored.
    """
    if not margin:
        return targets
    out = torch.full_like(targets, IGNORE)
    out[..., margin:-margin, margin:-margin] = targets[..., margin:-margin, margin:-margin]
    return out


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator of its own for training step `step` of process `rank`: its draws depend on nothing
    but these numbers, so a resumed run needs no state of it, and drawing from it leaves torch's
    generator (dropout, the loader's seed) where it would be without."""
    [state] = np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)
    return torch.Generator(device).manual_seed(int(state))


def with_own_predictions(model: torch.nn.Module, inputs: torch.Tensor, fraction: float, passes: int,
                         generator: torch.Generator) -> torch.Tensor:
    """inputs (B, T, H, W) with each cell of frames 1..T-1 replaced, with probability `fraction`, by a
    code drawn from the model's prediction for it: parallel scheduled sampling (Duckworth et al. 2019).

    At generation the model reads its own output, never seen in training on true frames only; here
    it is trained to go on from it. The predictions of all frames come from one pass over the inputs
    (no gradients; dropout off, as at generation), and codes are drawn only for the cells replaced:
    the output layer, most of the pass's cost, runs on `fraction` of them. Each further pass predicts
    from the last pass's mixed inputs, so that predictions of predictions are seen.
    """
    model.eval()
    mixed = inputs
    with torch.no_grad():
        for _ in range(passes):
            replace = torch.rand(inputs[:, 1:].shape, generator=generator, device=inputs.device) < fraction
            feats, weight, bias, _ = model.head_inputs(mixed[:, :-1])  # (B, T - 1, H, W, D): frames 1..T-1
            mixed = inputs.clone()
            mixed[:, 1:][replace] = sample_linear(feats[replace], weight, bias, generator)  # (replaced,)
    model.train()
    return mixed


def run_digest(grids: list[CodeGrid], codebook: Codebook, params: Params, world: int = 1) -> str:
    """Hash of everything a run's course depends on: a resume state is continued only by a run
    with the same digest. The code and the number of processes are in; `train.checkpoint_every`
    (when states are saved), `train.threads` and `train.loader_workers` are left out, so that a
    run can resume on a machine with other cores (the float sums then run in another order: the
    same training, not the same last bits). The codes are hashed a block of frames at a time."""
    package = Path(__file__).parents[1]  # src/videolm: every module of the package
    code = [torch.__version__] + [f"{path.relative_to(package)} {hashlib.sha256(path.read_bytes()).hexdigest()}"
                                  for path in sorted(package.rglob("*.py"))]
    facts = {"seed": params.seed, "model": params.model.model_dump(), "world": world,
             "train": params.train.model_dump(exclude={"checkpoint_every", "threads", "loader_workers"}),
             "codebook": codebook.digest,
             "grids": [[g.video_id, list(g.codes.shape), g.train_end, g.val_end, _codes_hash(g)] for g in grids],
             "code": code}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _codes_hash(grid: CodeGrid) -> str:
    """sha256 of the grid's codes in C order (as of the whole array), read `HASH_FRAMES` at a time."""
    digest = hashlib.sha256()
    for start in range(0, len(grid.codes), HASH_FRAMES):
        digest.update(np.ascontiguousarray(grid.codes[start:start + HASH_FRAMES]))
    return digest.hexdigest()


def train_model(grids: list[CodeGrid], codebook: Codebook, params: Params, log_epoch=None, resume=None,
                seconds: dict[str, float] | None = None):
    """Train the model of `params.model`; return (model with the best validation weights, summary).

    `log_epoch(epoch, metrics)` is called for every epoch of the run, in order (dvclive in the
    stage): a resumed run first replays the epochs done before it was stopped. `resume`, a
    path, is where the run's `TrainState` is saved and, if it is this run's, resumed from.
    `seconds`, if given, gets this run's wall-clock seconds of training steps (`steps`) and of
    validation (`validation`): printed by the stage, never stored, so that outputs stay the same bytes.
    """
    t = params.train
    device = resolve_device(params.device, int(os.environ.get("LOCAL_RANK", "0")))
    ranks = Ranks.join(device)
    if t.batch_size % ranks.world:
        raise VideoLMError(f"train.batch_size={t.batch_size} is the global batch, shared equally by the "
                           f"{ranks.world} training processes: it must be divisible by {ranks.world}")
    if t.precision == "bf16" and device.type != "cuda":
        raise VideoLMError(f"train.precision=bf16 needs a CUDA device (training runs on {device}): bf16 autocast "
                           f"is many times slower than fp32 on CPUs; use train.precision=fp32")
    seed_everything(params.seed, t.threads, device)
    model = build_model(params.model, codebook).to(device)
    if ranks.rank:  # each rank its own dropout masks; rank 0 draws what a single process draws
        torch.manual_seed(int(np.random.SeedSequence([params.seed, ranks.rank]).generate_state(1)[0]))
    optimizer = make_optimizer(model, params)
    total_steps = t.epochs * t.steps_per_epoch
    scheduler = lr_schedule(optimizer, total_steps, cosine=t.schedule == "cosine")
    margin = model.context_radius if t.full_context else 0
    data = CodeGridDataset(grids, "train", t.bptt + 1, t.crop + 2 * margin, total_steps * t.batch_size, params.seed,
                           reverse_time=t.reverse_time, mirror=codebook.mirror_map() if t.mirror else None)
    if data.crop <= 2 * margin:  # every target would be ignored: nothing to learn from
        raise VideoLMError(f"train.full_context=true: the crop of {data.crop} cells (clamped to the smallest "
                           f"training grid) is not wider than twice the model's context radius ({margin}), so no "
                           f"cell sees its whole neighbourhood; set train.full_context=false or use larger frames")
    val_grids = validation_videos(grids, t.val_videos, params.seed)

    digest = run_digest(grids, codebook, params, ranks.world)
    state = TrainState.load(resume) if resume else None
    if state and state.digest != digest:
        log.info(f"{resume}: the resume state of another run (params, data or code); starting afresh")
        state = None
    # Creating the loader's iterator draws its base seed from torch's generator, so the saved
    # generator states are restored after it: the resumed run draws what the stopped one would have.
    start = state.step if state else 0
    batches = iter(DataLoader(data, batch_size=t.batch_size // ranks.world, num_workers=t.loader_workers,
                              sampler=CropSampler(start, total_steps, t.batch_size, ranks.rank, ranks.world),
                              pin_memory=device.type == "cuda"))
    if state:
        if ranks.main:
            log.info(f"{resume}: resuming at step {state.step} of {total_steps} (epoch {state.epoch + 1})")
        state.restore(model, optimizer, scheduler, ranks.rank)
    else:
        state = TrainState(digest)
    net = model  # what the training steps call: the model, wrapped for several processes, compiled if asked
    if ranks.world > 1:  # gradients averaged over the ranks in backward(); the buffers (centroids) never change
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    if t.compile:
        net = torch.compile(net)
    log_epoch = log_epoch if ranks.main else None  # one rank logs
    if log_epoch:
        for epoch, metrics in enumerate(state.history, 1):
            log_epoch(epoch, metrics)

    seconds = {} if seconds is None else seconds
    seconds.update(steps=0.0, validation=0.0)
    for epoch in range(state.epoch + 1, t.epochs + 1):
        if t.patience and state.epoch - state.best_epoch >= t.patience:
            break  # checked before the epoch rather than after, so that a run resumed here stops too
        model.train()
        done = state.step - (epoch - 1) * t.steps_per_epoch  # > 0 when resumed within the epoch
        bar = tqdm(range(done, t.steps_per_epoch), desc=f"epoch {epoch}/{t.epochs}", total=t.steps_per_epoch,
                   initial=done, leave=False, disable=not ranks.main)
        started = time.perf_counter()
        for i in bar:
            clip = next(batches).to(device, non_blocking=True)  # (B / ranks, bptt + 1, crop + 2m, crop + 2m)
            inputs = clip[:, :-1]  # (B / ranks, bptt, crop + 2m, crop + 2m)
            with torch.autocast(device.type, torch.bfloat16, enabled=t.precision == "bf16"):
                if t.own_predictions:
                    generator = step_generator(params.seed, state.step, ranks.rank, device)
                    inputs = with_own_predictions(model, inputs, t.own_predictions, t.own_passes, generator)
                _, loss, _ = net(inputs, targets=without_border(clip[:, 1:], margin))
            value = ranks.sum([loss.item()])[0] / ranks.world  # the global batch's loss, the same on every rank
            if not value < MAX_LOSS:
                raise diverged(params, f"training loss is {value:.4g} at epoch {epoch}, step {i + 1} of "
                                       f"{t.steps_per_epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            state.step += 1
            state.running_loss += value
            bar.set_postfix(loss=f"{value:.3f}")
            mid_epoch = i + 1 < t.steps_per_epoch  # the epoch's end saves anyway
            if resume and t.checkpoint_every and state.step % t.checkpoint_every == 0 and mid_epoch:
                state.save(resume, model, optimizer, scheduler, ranks)
        seconds["steps"] += time.perf_counter() - started
        metrics = {"train_loss": state.running_loss / t.steps_per_epoch}
        metrics["train_perplexity"] = math.exp(metrics["train_loss"])
        started = time.perf_counter()
        val_loss = validation_loss(model, val_grids, ranks, t.val_batch_videos) if val_grids else metrics["train_loss"]
        seconds["validation"] += time.perf_counter() - started
        if not val_loss < MAX_LOSS:
            raise diverged(params, f"validation loss is {val_loss:.4g} after epoch {epoch}")
        metrics.update(val_loss=val_loss, val_perplexity=math.exp(val_loss))
        if log_epoch:
            log_epoch(epoch, metrics)
        if ranks.main:
            tqdm.write(f"epoch {epoch}: train ppl {metrics['train_perplexity']:.2f}, "
                       f"val ppl {metrics['val_perplexity']:.2f}")
        state.epoch, state.running_loss = epoch, 0.0
        state.history.append(metrics)
        if val_loss < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.best_model = val_loss, epoch, copy.deepcopy(model.state_dict())
        if resume:
            state.save(resume, model, optimizer, scheduler, ranks)
    ranks.leave()
    model.load_state_dict(state.best_model)
    model.cpu()  # the checkpoint and the evaluation are on the CPU  # set by the first epoch: its validation loss is finite
    summary = {"best_epoch": state.best_epoch, "epochs_run": state.epoch,
               "val_perplexity": math.exp(state.best_val_loss),
               "parameters": sum(p.numel() for p in model.parameters())}
    return model, summary


def validation_videos(grids: list[CodeGrid], limit: int, seed: int) -> list[CodeGrid]:
    """The grids with validation frames, or `limit` of them (0 = all) drawn once with `seed`, in order."""
    grids = [g for g in grids if g.part("val")[1] > g.part("val")[0]]
    if not limit or len(grids) <= limit:
        return grids
    keep = np.random.default_rng([seed, 1]).choice(len(grids), limit, replace=False)
    return [grids[i] for i in sorted(keep)]


def validation_loss(model: torch.nn.Module, grids: list[CodeGrid], ranks: Ranks, batch: int = 1) -> float:
    """Mean NLL of the validation frames over all videos, each rank scoring every `world`-th
    video (whole, `batch` videos of one grid size a forward pass) and the sums added up across
    the ranks."""
    scores = score_part(model, grids[ranks.rank::ranks.world], "val", batch=batch)
    nll, count = ranks.sum([scores.nll["model"], scores.count])
    return nll / count


def diverged(params: Params, what: str) -> TrainingError:
    """The error for a diverged loss, naming the params that tame it."""
    t = params.train
    return TrainingError(f"training diverged: the {what}; lower train.lr (now {t.lr:g}) or clip gradients with "
                         f"train.grad_clip (now {t.grad_clip:g}; 0 = off)")
