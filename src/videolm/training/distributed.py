"""Training in several processes with torchrun and DistributedDataParallel.

`dvc repro` starts the train stage as one plain `python` process. With `train.processes` > 1
that process starts `torchrun --standalone --nproc_per_node N` on the same script and waits
(`launch_torchrun`): torchrun, not this project, starts, watches and stops the ranks. For
several machines, run the stage under torchrun yourself with its rendezvous options (the
docs/scale-out.md shows how); a stage that finds itself under torchrun (`WORLD_SIZE` set) does not launch.

Each rank joins the process group (`Ranks.join`: gloo on the CPU, nccl on CUDA), trains on
its own share of every global batch, and sums its validation scores with the others'; only
rank 0 writes outputs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import torch
import torch.distributed as dist

from videolm.lifetime import die_with_parent


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes the outputs, logs and progress bars."""
        return self.rank == 0

    @classmethod
    def launched(cls) -> Ranks:
        """This process's place as torchrun started it (`RANK`, `WORLD_SIZE`); rank 0 of 1 otherwise."""
        if not under_torchrun():
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))

    @classmethod
    def join(cls, device: torch.device) -> Ranks:
        """`launched()`, having joined the process group when there are several processes: gloo
        on the CPU, nccl on CUDA."""
        ranks = cls.launched()
        if ranks.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
        return ranks

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64), in the same order on every rank."""
        if self.world == 1:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(total)
        return total.tolist()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (picklable objects)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def leave(self) -> None:
        """Wait for every rank, then leave the process group (before the process ends)."""
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where tensors for collectives live: nccl only moves CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def under_torchrun() -> bool:
    """Whether torchrun started this process (it sets `WORLD_SIZE`, 1 included)."""
    return "WORLD_SIZE" in os.environ


def launch_torchrun(processes: int, script: str, argv: list[str]) -> int:
    """Run `script argv` under `torchrun --standalone --nproc_per_node processes` (one machine) and
    return its exit status; torchrun's own report of a failed rank follows the rank's message.
    If this process is killed, torchrun gets SIGTERM and stops the ranks (no orphans writing on)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               script, *argv]
    return subprocess.run(command, preexec_fn=partial(die_with_parent, signal.SIGTERM, os.getpid())).returncode
