"""The model's products in fixed tiles: a video's scores do not depend on what shares its batch.

A matrix product's bits depend on its shape, its operands' layout and alignment, and its thread
count: BLAS and oneDNN pick kernels, and with them the order of each sum, by all of these and
by the CPU's vendor (MKL takes a path of its own for a product of fewer than 4 rows, and
another for a transposed operand). So when videos are scored together, a product over all of
their rows could round a video's values otherwise than a product over its rows alone.

Here, without gradients on the CPU (scoring, generation, prediction: every forward pass whose
bits are compared), every product of the model runs over tiles of exactly `TILE` rows, copied
into one buffer (the last tile padded with zero rows) and multiplied into another: the same
shape, layout and alignment, whatever the batch. A convolution is taken as such a product
over each image's unfolded neighbourhoods (`F.unfold`, which only moves values). What
is left to the library is that a row's result does not depend on where it sits in its tile,
which tests/test_math_paths.py checks under every math setting the machine offers.

Training (gradients on) runs the library's own products unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

TILE = 256  # rows of every product: 1 MB of scores at k = 1,024


def fixed(x: torch.Tensor) -> bool:
    """Whether products over `x` run in fixed tiles: on the CPU, without gradients."""
    return x.device.type == "cpu" and not torch.is_grad_enabled()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: x (..., in), weight (out, in), bias (out,) -> (..., out); without
    gradients on the CPU in products of `TILE` rows (module docstring)."""
    if not fixed(x):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    out = x.new_empty(rows.shape[0], weight.shape[0])
    tile, scores = x.new_zeros(TILE, x.shape[-1]), x.new_empty(TILE, weight.shape[0])
    weight_t = weight.contiguous().T
    for start in range(0, rows.shape[0], TILE):
        n = min(TILE, rows.shape[0] - start)
        tile[:n] = rows[start:start + n]
        tile[n:] = 0
        if bias is None:
            torch.mm(tile, weight_t, out=scores)
        else:
            torch.addmm(bias, tile, weight_t, out=scores)
        out[start:start + n] = scores[:n]
    return out.reshape(*x.shape[:-1], weight.shape[0])


def conv2d(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for a stride-1 convolution with 'same' padding, x (N, C, H, W); without gradients
    on the CPU, each image's neighbourhoods unfolded into rows (H*W, C*k*k) and multiplied by
    `linear`'s tiles."""
    if not fixed(x):
        return layer(x)
    n, _, h, w = x.shape
    weight = layer.weight.reshape(layer.out_channels, -1)  # (out, C*k*k), unfold's order
    out = x.new_empty(n, h, w, layer.out_channels)
    for image in range(n):
        rows = F.unfold(x[image:image + 1], layer.kernel_size, padding=layer.padding)[0].T  # (H*W, C*k*k)
        out[image] = linear(rows, weight, layer.bias).reshape(h, w, -1)
    return out.permute(0, 3, 1, 2)
