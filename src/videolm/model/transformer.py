"""A space-time transformer over the code grids, beside the rCNN, with the same factorization.

The scores of frame t+1 at every cell come from frames <= t, as the rCNN's do, so the two
perplexities are the same quantity and generation, filling and the pixel decoder use either.
Each code is embedded (the rCNN's `CodeEmbedding`), mapped to `hidden` features, and goes
through `model.layers` pre-norm blocks of divided space-time attention (TimeSformer's split,
Bertasius et al. 2021), local in both:

    x = x + TimeAttention(norm(x))    each cell attends to itself in the last `context_frames` frames
    x = x + SpaceAttention(norm(x))   each cell attends to the kernel_size x kernel_size cells around it
    x = x + MLP(norm(x))              (4x wide, GELU)

then the rCNN's output head (`independent`, `tied` or `atom`) scores the next frame's codes.

- Stationary in space: the same weights at every cell; positions are relative (Shaw et al.
  2018: a learned vector per offset, added to the keys), so the model trains on crops and
  runs on any frame size. Cells beyond the frame's edge, and frames before a clip's start,
  are zero keys and values, as a convolution's zero padding: a border is seen the same way
  wherever it is.
- Causal in time over a bounded window: a layer's queries at frame t read the keys and values
  of frames t - context_frames + 1 .. t. These are kept between calls in the state, so a step
  costs the same however long the clip is so far, and stepping gives the full forward's scores.

The state is one tensor (B, C, H, W), as the rCNN's is, so that callers batch, stack and
expand it alike: its first `hidden` channels are the last block's features at every cell (what
the pixel decoder reads, `state_features`), then each layer's kept keys and values of the last
`context_frames - 1` frames. Zeros are the state before a clip's first frame.

On the CPU attention is a sum over each cell's few keys (faster there than the library's
kernel), and without gradients (scoring, generation: every pass whose bits are compared) every
product covers one frame (`framewise`), so a video's scores do not depend on what shares its
batch. On CUDA attention runs `scaled_dot_product_attention` (flash attention where it applies;
under train.precision=bf16 autocast).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from videolm.config import ModelConfig
from videolm.model import framewise
from videolm.model.rcnn import CodeEmbedding, add_output_layer, dropout, output_layer, scores_or_loss

SDPA_ROWS = 32_768  # queries per scaled_dot_product_attention call (CUDA kernels take at most 65,535 a launch)


def attend(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """Softmax attention of each query over its L keys: q (..., heads, d); keys[i] and values[i]
    (..., heads, d), the i-th key and value of every query -> (..., heads, d).
    On the CPU one product-and-sum per key (no L-fold copy of the keys, and each query's bits
    independent of what else is in the batch), elsewhere `scaled_dot_product_attention`."""
    if q.device.type != "cpu":
        k, v = (torch.stack(t, -2).flatten(0, -4) for t in (keys, values))  # (N, heads, L, d)
        rows = zip(*(t.split(SDPA_ROWS) for t in (q.flatten(0, -3)[:, :, None], k, v)))  # the kernels' batch limit
        return torch.cat([F.scaled_dot_product_attention(*row)[:, :, 0] for row in rows]).reshape(q.shape)
    scores = torch.stack([(q * k).sum(-1) for k in keys], -1) / math.sqrt(q.shape[-1])  # (..., heads, L)
    weights = torch.softmax(scores, -1)
    return sum(weights[..., i, None] * v for i, v in enumerate(values))


class LocalAttention(nn.Module):
    """Multi-head attention of each cell over `offsets` keys (in time or in space), with a learned
    vector per relative offset and head added to its key."""

    def __init__(self, dim: int, heads: int, offsets: int, p: float):
        super().__init__()
        self.heads, self.p = heads, p
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative = nn.Parameter(torch.zeros(offsets, heads, dim // heads))
        nn.init.normal_(self.relative, std=0.02)

    def project(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (..., H, W, C) -> [q, k, v], each (..., H, W, C)."""
        return list(framewise.linear(x, self.qkv.weight, self.qkv.bias).chunk(3, -1))

    def combine(self, q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
        """q (..., C) and its `offsets` keys and values, each (..., C) -> the attention's output (..., C)."""
        heads = (self.heads, -1)
        out = attend(q.unflatten(-1, heads), [k.unflatten(-1, heads) + r for k, r in zip(keys, self.relative)],
                     [v.unflatten(-1, heads) for v in values])
        out = framewise.linear(out.flatten(-2), self.proj.weight, self.proj.bias)
        return dropout(out, self.p, self.training)


class TimeAttention(LocalAttention):
    """Each cell over itself in the last `frames` frames (the current one included)."""

    def forward(self, x: torch.Tensor, kept_k: torch.Tensor, kept_v: torch.Tensor):
        """x (B, T, H, W, C); kept_k, kept_v (B, frames - 1, H, W, C): the keys and values of the
        frames before x's first. Returns the output (B, T, H, W, C) and every frame's keys and
        values (B, frames - 1 + T, H, W, C) (the kept ones first)."""
        q, k, v = self.project(x)
        k, v = torch.cat([kept_k, k], 1), torch.cat([kept_v, v], 1)
        kept, t = kept_k.shape[1], x.shape[1]
        back = [slice(kept - o, kept - o + t) for o in range(kept + 1)]  # o frames back, o = 0 .. kept
        return self.combine(q, [k[:, b] for b in back], [v[:, b] for b in back]), k, v


class SpaceAttention(LocalAttention):
    """Each cell over the `size` x `size` cells around it in its own frame (zeros beyond the edge)."""

    def __init__(self, dim: int, heads: int, size: int, p: float):
        super().__init__(dim, heads, size * size, p)
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        h, w, r = x.shape[2], x.shape[3], self.size // 2
        k, v = (F.pad(t, (0, 0, r, r, r, r)) for t in (k, v))  # (B, T, H + 2r, W + 2r, C)
        around = [(slice(dy, dy + h), slice(dx, dx + w)) for dy in range(self.size) for dx in range(self.size)]
        return self.combine(q, [k[:, :, y, x] for y, x in around], [v[:, :, y, x] for y, x in around])


class MLP(nn.Module):
    def __init__(self, dim: int, p: float):
        super().__init__()
        self.up, self.down, self.p = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(framewise.linear(x, self.up.weight, self.up.bias))
        return dropout(framewise.linear(x, self.down.weight, self.down.bias), self.p, self.training)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.hidden
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.time = TimeAttention(dim, cfg.heads, cfg.context_frames, cfg.dropout)
        self.space = SpaceAttention(dim, cfg.heads, cfg.kernel_size, cfg.dropout)
        self.mlp = MLP(dim, cfg.dropout)

    def forward(self, x: torch.Tensor, kept_k: torch.Tensor, kept_v: torch.Tensor):
        out, k, v = self.time(self.norms[0](x), kept_k, kept_v)
        x = x + out
        x = x + self.space(self.norms[1](x))
        return x + self.mlp(self.norms[2](x)), k, v


class SpaceTimeTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, k: int, centroids: torch.Tensor | None = None):
        super().__init__()
        self.cfg, self.k = cfg, k
        self.embed = CodeEmbedding(k, cfg.embed_dim, centroids if cfg.head == "atom" else None)
        self.inputs = nn.Linear(cfg.embed_dim, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.hidden)
        add_output_layer(self, cfg, k)

    @property
    def context_radius(self) -> int:
        """How many cells away a prediction can see: each block's spatial reach, summed."""
        return self.cfg.layers * (self.cfg.kernel_size // 2)

    @property
    def state_features(self) -> int:
        """The state's leading channels that are features at each cell (the rest are kept keys and values)."""
        return self.cfg.hidden

    def forward(self, codes: torch.Tensor, state: torch.Tensor | None = None, targets: torch.Tensor | None = None):
        """As `RCNN.forward`: codes (B, T, H, W) int64 -> (logits or None, loss or None, state (B, C, H, W))."""
        feats, weight, bias, states = self.head_inputs(codes, state, every_step=False)
        return scores_or_loss(feats, weight, bias, targets) + (states[:, -1].permute(0, 3, 1, 2),)

    def head_inputs(self, codes: torch.Tensor, state: torch.Tensor | None = None, every_step: bool = True):
        """As `RCNN.head_inputs`: codes (B, T, H, W) -> (feats (B, T, H, W, D), weight (k, D), bias (k,),
        states (B, T, H, W, C)): the state after every step (`every_step` False: the last step's only,
        (B, 1, H, W, C))."""
        b, t, h, w = codes.shape
        cfg, kept = self.cfg, self.cfg.context_frames - 1
        table = self.embed.weight()
        x = framewise.linear(table[codes], self.inputs.weight, self.inputs.bias)  # (B, T, H, W, hidden)
        if state is None:
            state = x.new_zeros(b, self.state_channels, h, w)
        cache = state.permute(0, 2, 3, 1)[..., cfg.hidden:].reshape(b, h, w, cfg.layers, 2, kept, cfg.hidden)
        cache = cache.permute(3, 4, 0, 5, 1, 2, 6)  # (layers, 2, B, kept, H, W, hidden)
        keys_values = []
        for block, (kept_k, kept_v) in zip(self.blocks, cache):
            x, k, v = block(x, kept_k, kept_v)
            keys_values += [k, v]  # (B, kept + T, H, W, hidden)
        x = self.norm(x)
        steps = range(t) if every_step else [t - 1]
        states = torch.stack([self._state(x[:, s], [kv[:, s + 1:s + 1 + kept] for kv in keys_values])
                              for s in steps], 1)
        return (*output_layer(self, dropout(x, cfg.dropout, self.training), table), states)

    @property
    def state_channels(self) -> int:
        return self.cfg.hidden * (1 + 2 * self.cfg.layers * (self.cfg.context_frames - 1))

    @staticmethod
    def _state(features: torch.Tensor, keys_values: list[torch.Tensor]) -> torch.Tensor:
        """(B, H, W, C): the features (B, H, W, hidden), then each kept (B, kept, H, W, hidden) frame by frame."""
        return torch.cat([features, *(kv.permute(0, 2, 3, 1, 4).flatten(3) for kv in keys_values)], -1)
