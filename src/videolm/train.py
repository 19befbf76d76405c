"""The training loop: truncated BPTT on random crops, validation on whole frames.

Each epoch is `steps_per_epoch` batches of random crops (`CodeGridDataset`), then the
validation part is scored on whole frames with the state carried through each video.
The kept weights are those of the epoch with the best validation loss (test frames are
never looked at), and training stops early after `patience` epochs without progress.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from videolm.codebook import Codebook
from videolm.codes import CodeGrid
from videolm.config import Params
from videolm.dataset import CodeGridDataset
from videolm.models import build_model
from videolm.models.rcnn import IGNORE
from videolm.scoring import score_part


def seed_everything(seed: int, threads: int = 0) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
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


def train_model(grids: list[CodeGrid], codebook: Codebook, params: Params, log_epoch=None):
    """Train the model of `params.model`; return (model with the best validation weights, summary).

    `log_epoch(epoch, metrics)` is called after every epoch (dvclive in the stage).
    """
    t = params.train
    seed_everything(params.seed, t.threads)
    model = build_model(params.model, codebook)
    optimizer = make_optimizer(model, params)
    total_steps = t.epochs * t.steps_per_epoch
    lr_at = (lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps))) if t.schedule == "cosine" else (lambda s: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    margin = model.context_radius if t.full_context else 0
    data = CodeGridDataset(grids, "train", t.bptt + 1, t.crop + 2 * margin, total_steps * t.batch_size, params.seed,
                           reverse_time=t.reverse_time, mirror=codebook.mirror_map() if t.mirror else None)
    batches = iter(DataLoader(data, batch_size=t.batch_size, shuffle=False))
    has_val = any(g.part("val")[1] > g.part("val")[0] for g in grids)

    best = {"val_loss": math.inf, "epoch": 0, "state": copy.deepcopy(model.state_dict())}
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, t.epochs + 1):
        model.train()
        running = 0.0
        bar = tqdm(range(t.steps_per_epoch), desc=f"epoch {epoch}/{t.epochs}", leave=False)
        for _ in bar:
            clip = next(batches)  # (B, bptt + 1, crop + 2 * margin, crop + 2 * margin)
            _, loss, _ = model(clip[:, :-1], targets=without_border(clip[:, 1:], margin))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            running += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        metrics = {"train_loss": running / t.steps_per_epoch}
        metrics["train_perplexity"] = math.exp(metrics["train_loss"])
        val_loss = score_part(model, grids, "val").mean("model") if has_val else metrics["train_loss"]
        metrics.update(val_loss=val_loss, val_perplexity=math.exp(val_loss))
        if log_epoch:
            log_epoch(epoch, metrics)
        tqdm.write(f"epoch {epoch}: train ppl {metrics['train_perplexity']:.2f}, val ppl {metrics['val_perplexity']:.2f}")
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        elif t.patience and epoch - best["epoch"] >= t.patience:
            break
    model.load_state_dict(best["state"])
    summary = {"best_epoch": best["epoch"], "epochs_run": epoch, "val_perplexity": math.exp(best["val_loss"]),
               "train_seconds": time.perf_counter() - start, "parameters": sum(p.numel() for p in model.parameters())}
    return model, summary
