"""The recurrent convolutional network (rCNN) of Ranzato et al. (2014), top to bottom.

At every time step each code of the grid is embedded, a stack of convolutions mixes
each location with its spatial neighbourhood, and the recurrent state is updated with a
1x1 convolution (a fully connected layer shared across locations, so that border
effects do not travel through time):

    x_t = s(W_xL * ... s(W_x1 * E[c_t]))          input convolutions, kernel k x k
    h_t = s(x_t + W_h h_{t-1})                    1x1 recurrence
    p(c_{t+1} | c_{<=t}) = softmax(out(h_t))      at every location

The output layer (`head`) is one of:
- independent: a linear map from h_t to k scores;
- tied: h_t is mapped to the embedding space and scored against the input table;
- atom: like tied, but each code's vector is a learned linear map of its centroid (in std units)
  (the 8x8 patch it stands for) plus a small per-code vector, so that codes that look
  alike share statistics.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from videolm.config import ModelConfig
from videolm.model import framewise
from videolm.model.linear_ce import linear_cross_entropy

NONLINEARITIES = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class CodeEmbedding(nn.Module):
    """The vector of each code: a lookup table, or a map of its centroid plus a table."""

    def __init__(self, k: int, dim: int, centroids: torch.Tensor | None = None):
        super().__init__()
        self.table = nn.Embedding(k, dim)
        if centroids is None:
            self.centroid_map = None
        else:
            self.register_buffer("centroids", centroids.float())  # (k, size*size), gray / std
            self.centroid_map = nn.Linear(centroids.shape[1], dim)
            nn.init.normal_(self.table.weight, std=0.02)  # the centroids carry most of the signal

    def weight(self) -> torch.Tensor:
        """(k, dim) vectors of all codes."""
        if self.centroid_map is None:
            return self.table.weight
        return self.centroid_map(self.centroids) + self.table.weight


class RCNN(nn.Module):
    def __init__(self, cfg: ModelConfig, k: int, centroids: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.k = k
        act = NONLINEARITIES[cfg.nonlinearity]
        self.embed = CodeEmbedding(k, cfg.embed_dim, centroids if cfg.head == "atom" else None)
        layers, channels = [], cfg.embed_dim
        for _ in range(cfg.input_layers):
            layers += [nn.Conv2d(channels, cfg.hidden, cfg.kernel_size, padding=cfg.kernel_size // 2), act()]
            channels = cfg.hidden
        self.inputs = nn.Sequential(*layers[:-1])  # the last nonlinearity is applied with the recurrence
        self.recur = nn.Conv2d(cfg.hidden, cfg.hidden, 1, bias=False)
        self.act = act()
        add_output_layer(self, cfg, k)

    @property
    def context_radius(self) -> int:
        """How many cells away a prediction can see: the input convolutions' reach (the
        recurrence is 1x1, so it does not grow with time)."""
        return self.cfg.input_layers * (self.cfg.kernel_size // 2)

    def forward(self, codes: torch.Tensor, state: torch.Tensor | None = None,
                targets: torch.Tensor | None = None):
        """codes (B, T, H, W) int64 -> (logits, loss, state).

        Without `targets`: logits (B, T, H, W, k) for the next frame's codes, loss None. With
        `targets` (B, T, H, W) (cells set to IGNORE left out): logits None and the mean
        cross-entropy, computed chunk by chunk without ever holding the logits (`linear_ce`).
        `state` (B, hidden, H, W) continues the sequence; the returned one is the last step's (every
        step's: `head_inputs`).
        """
        feats, weight, bias, states = self.head_inputs(codes, state)
        return scores_or_loss(feats, weight, bias, targets) + (states[:, -1].permute(0, 3, 1, 2),)

    def head_inputs(self, codes: torch.Tensor, state: torch.Tensor | None = None):
        """codes (B, T, H, W) int64 -> (feats (B, T, H, W, D), weight (k, D), bias (k,), states).

        The next frame's scores are `feats @ weight.T + bias`; they are returned unmultiplied so
        that callers can take them a chunk of rows at a time (the loss, `sample_linear`) instead of
        holding all (B*T*H*W, k) of them. `state` (B, hidden, H, W) continues the sequence;
        `states` (B, T, H, W, hidden) are the recurrent states of every step, channels last.
        Without gradients on the CPU every product covers one frame (`framewise`), so that a video's
        values do not depend on what shares its batch.
        """
        b, t, h, w = codes.shape
        table = self.embed.weight()  # (k, E)
        x = table[codes].reshape(b * t, h, w, -1).permute(0, 3, 1, 2)  # (B*T, E, H, W), channels last
        for layer in self.inputs:
            x = framewise.conv2d(layer, x) if isinstance(layer, nn.Conv2d) else layer(x)
        x = x.permute(0, 2, 3, 1).reshape(b, t, h, w, -1)  # (B, T, H, W, C), all steps at once
        # The 1x1 recurrence is a matrix product over channels, run channels-last: one matmul per
        # step, and the features come out in the layout the output layer reads (no copy).
        recur = self.recur.weight[:, :, 0, 0]  # (C, C)
        state = x.new_zeros(b, h, w, self.cfg.hidden) if state is None else state.permute(0, 2, 3, 1)
        states = []
        for step in range(t):
            state = self.act(x[:, step] + framewise.linear(state, recur))  # (B, H, W, C)
            states.append(state)
        states = torch.stack(states, 1)  # (B, T, H, W, C)
        return (*output_layer(self, dropout(states, self.cfg.dropout, self.training), table), states)

    @property
    def state_features(self) -> int:
        """The state's channels: all of them are features at each cell (what the pixel decoder reads)."""
        return self.cfg.hidden


def add_output_layer(model: nn.Module, cfg: ModelConfig, k: int) -> None:
    """The output layer of `cfg.head` from `cfg.hidden` features, as `model.out` (and `model.out_bias`)."""
    if cfg.head == "independent":
        model.out = nn.Linear(cfg.hidden, k)
    else:
        model.out = nn.Linear(cfg.hidden, cfg.embed_dim)
        model.out_bias = nn.Parameter(torch.zeros(k))


def output_layer(model: nn.Module, feats: torch.Tensor, table: torch.Tensor):
    """(feats, weight, bias) of the next frame's scores `feats @ weight.T + bias` from the
    features (..., hidden) and the code vectors `table` (k, E), by `model`'s output layer."""
    if model.cfg.head == "independent":  # scores = feats W^T + b
        return feats, model.out.weight, model.out.bias  # (.., C), (k, C), (k,)
    return framewise.linear(feats, model.out.weight, model.out.bias), table, model.out_bias  # (.., E), (k, E), (k,)


def scores_or_loss(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor | None):
    """(logits (B, T, H, W, k), None) without `targets`; with them (None, the mean cross-entropy),
    computed chunk by chunk without ever holding the logits (`linear_ce`)."""
    if targets is not None:
        return None, linear_cross_entropy(feats, weight, bias, targets)
    return framewise.linear(feats, weight, bias), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as `F.dropout`, with its mask drawn by `torch.rand`: on the CPU
    `F.dropout`'s `bernoulli_` is several times slower for the millions of features of a batch
    (the same distribution, another random stream)."""
    if not training or p == 0:
        return x
    return x * (torch.rand_like(x) >= p) * (1 / (1 - p))
