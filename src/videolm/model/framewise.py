"""The model's products one frame at a time: a video's scores do not depend on what shares its batch.

A matrix product's bits depend on its shape, its operands' layout and alignment, and its thread
count: BLAS and oneDNN pick kernels, and with them the order of each sum, by all of these and
by the CPU's vendor (on an AMD EPYC, MKL takes a path of its own for a product of fewer than 4
rows, and another for a transposed operand). So when videos are scored together, a product over
all of their cells could round a video's values otherwise than a product over its cells alone.

Here, without gradients on the CPU (scoring, generation, prediction: every forward pass whose
bits are compared), every product of the model covers exactly one frame of one video: a
convolution takes one image (1, C, H, W), a linear layer one frame's cells (H*W, in). Each is
called with the same shape, layout, 64-byte alignment and thread count whatever else is in the
batch, so a frame's values are a function of that frame's inputs alone: nothing is left to
what the library does with a larger product.

Training (gradients on) runs the library's own batched products unchanged: its shapes are the
same in a run and in its resume.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ALIGN = 64  # bytes: every operand starts on such a boundary (MKL's condition for reproducible results)


def fixed(x: torch.Tensor) -> bool:
    """Whether products over `x` run frame by frame: on the CPU, without gradients."""
    return x.device.type == "cpu" and not torch.is_grad_enabled()


def _aligned(t: torch.Tensor, frame: int) -> bool:
    """Whether every frame of `frame` elements of contiguous `t` starts on an `ALIGN` boundary."""
    return t.data_ptr() % ALIGN == 0 and frame * t.element_size() % ALIGN == 0


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: x (..., H, W, in), weight (out, in), bias (out,) -> (..., H, W, out);
    without gradients on the CPU one product per frame (H*W rows), each read from and written to
    contiguous, aligned memory (the frame's own where its size allows, else a buffer)."""
    if not fixed(x):
        return F.linear(x, weight, bias)
    *lead, h, w, width_in = x.shape
    cells, width = h * w, weight.shape[0]
    rows = x.reshape(-1, cells, width_in).contiguous()
    out = x.new_empty(rows.shape[0], cells, width)
    weight_t = weight.contiguous().T
    read_in_place, write_in_place = _aligned(rows, cells * width_in), _aligned(out, cells * width)
    source, target = x.new_empty(cells, width_in), x.new_empty(cells, width)
    for frame in range(rows.shape[0]):
        if read_in_place:
            source = rows[frame]
        else:
            source.copy_(rows[frame])
        result = out[frame] if write_in_place else target
        if bias is None:
            torch.mm(source, weight_t, out=result)
        else:
            torch.addmm(bias, source, weight_t, out=result)
        if not write_in_place:
            out[frame] = target
    return out.reshape(*lead, h, w, width)


def conv2d(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for a stride-1 convolution that keeps the frame size (the model's: 'same'
    padding), x (N, C, H, W) laid out channels last -> (N, out, H, W) laid out channels last;
    without gradients on the CPU one image at a time, each read in place where it is aligned
    (else from a fresh copy), so that every call sees one layout and alignment."""
    if not fixed(x):
        return layer(x)
    x = x.contiguous(memory_format=torch.channels_last)
    in_place = _aligned(x, x[0].numel())
    out = torch.empty(x.shape[0], layer.out_channels, *x.shape[2:], dtype=x.dtype, memory_format=torch.channels_last)
    for image in range(x.shape[0]):
        one = x[image:image + 1]
        out[image] = layer(one if in_place else one.clone(memory_format=torch.channels_last))[0]
    return out
