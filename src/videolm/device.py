"""The `device` param as a torch device, for every stage that runs tensor work on it.

`cpu` is the default and the tested path; `auto` takes CUDA when torch sees a GPU; `cuda`
insists on one. Only tensor work moves: decoding, HDF5 and the files stay on the CPU, and a
stage's outputs are the same bytes on either device where its module says so (encode and
fit_codebook do: their search is checked against the CPU's, `codes/search.py`).
"""

from __future__ import annotations

import os

import torch

from videolm.errors import VideoLMError

# cuBLAS needs a fixed workspace to give deterministic matmuls on CUDA >= 10.2 (without it
# `torch.use_deterministic_algorithms(True)` raises at the first matmul); this is the setting
# PyTorch's reproducibility notes give.
CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """`device` (cpu | cuda | auto) as a torch device: auto = CUDA when present, else the CPU.
    On CUDA each process takes GPU `local_rank` (modulo the GPUs), and the deterministic cuBLAS
    workspace is set if it is not; TF32 matmuls stay off, so fp32 means fp32."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise VideoLMError("device=cuda: no CUDA device is available to torch "
                           f"({torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA); "
                           "use device=auto or cpu")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device
