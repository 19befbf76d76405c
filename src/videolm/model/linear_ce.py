"""The output layer and its cross-entropy in one pass, chunk by chunk: the exact loss without
ever holding the (positions x k) logits or their gradient.

    loss = mean over scored rows of  logsumexp(x W^T + b) - (x W^T + b)[target]

At k=10,000 the softmax head is about 90% of a training step's FLOPs, and the plain
formulation (`F.cross_entropy(x @ W.T + b, t)`) writes the full logits, their log-softmax and
its gradient, each (positions x k) fp32: 330 MB apiece at the default batch, so the step is
bound by memory traffic and page faults rather than arithmetic. Here the rows are taken
a few hundred at a time (`CHUNK` logits) into one reused buffer: logits, softmax and the logits' gradient
(softmax - one-hot) are computed in place, and the gradients of x, W and b are accumulated
during the forward pass (the backward pass only scales them), as in Liger-Kernel's fused
linear cross-entropy. Same FLOPs (three matmuls), a few MB of memory.

The result equals the plain formulation within float rounding (tests/test_models.py): the
sums run in another order, so the last bits differ.

`sample_linear` draws a code from the same scores' softmax at every row, chunk by chunk too
(training on the model's own predictions, `train.own_predictions`).
"""

from __future__ import annotations

import torch

IGNORE = -100  # target value of rows left out of the loss (as `F.cross_entropy`'s ignore_index)
CHUNK = 5_120_000  # logits per chunk (rows = CHUNK // k): 20 MB of fp32, small enough to stay in cache


def rows_per_chunk(n: int, k: int, chunk: int) -> int:
    """Rows of x taken at a time so that a chunk holds about `chunk` scores (at least one row)."""
    return max(1, min(n, chunk // k))


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                chunk: int) -> torch.Tensor:
        # x (N, E), weight (k, E), bias (k,), targets (N,) int64 with IGNORE for unscored rows
        n, k = x.shape[0], weight.shape[0]
        rows = rows_per_chunk(n, k, chunk)
        scored = targets != IGNORE  # (N,)
        count = scored.sum()
        grads = ctx.needs_input_grad[:3] != (False, False, False)
        grad_x = torch.empty_like(x) if grads else None
        grad_w = torch.zeros_like(weight) if grads else None
        grad_b = torch.zeros_like(bias) if grads else None
        buffer = x.new_empty(rows, k)
        total = x.new_zeros(())
        for start in range(0, n, rows):
            part = slice(start, min(start + rows, n))
            xs, keep = x[part], scored[part]
            ts = targets[part].clamp(min=0)  # an ignored row picks code 0, then counts for nothing
            logits = torch.addmm(bias, xs, weight.T, out=buffer[:xs.shape[0]])  # (c, k)
            picked = logits.gather(1, ts[:, None])[:, 0]  # (c,)
            peak = logits.amax(1, keepdim=True)  # (c, 1)
            probs = logits.sub_(peak).exp_()  # (c, k), unnormalized softmax, in place
            sums = probs.sum(1)  # (c,)
            total += ((sums.log() + peak[:, 0] - picked) * keep).sum()  # logsumexp - picked
            if not grads:
                continue
            scale = keep.to(x.dtype) / count  # (c,): 1/count for scored rows, 0 for the others
            grad = probs.mul_((scale / sums)[:, None])  # softmax / count
            grad.scatter_add_(1, ts[:, None], -scale[:, None])  # - one-hot / count: d loss / d logits
            torch.mm(grad, weight, out=grad_x[part])
            grad_w.addmm_(grad.T, xs)
            grad_b += grad.sum(0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        return grad_x * grad_loss, grad_w * grad_loss, grad_b * grad_loss, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                         chunk: int = CHUNK) -> torch.Tensor:
    """Mean cross-entropy of the scores `x @ weight.T + bias` against `targets`, rows with
    IGNORE left out: `F.cross_entropy(x @ weight.T + bias, targets, ignore_index=IGNORE)`,
    computed `chunk // k` rows at a time. x (..., E), weight (k, E), bias (k,), targets (...)."""
    with torch.autocast(x.device.type, enabled=False):
        return LinearCrossEntropy.apply(*head_rows(x, weight, bias), targets.reshape(-1), chunk)


@torch.no_grad()
def sample_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, generator: torch.Generator,
                  chunk: int = CHUNK) -> torch.Tensor:
    """A code drawn from softmax(x @ weight.T + bias) at every row (temperature 1), computed `chunk // k`
    rows at a time: x (..., E), weight (k, E), bias (k,) -> codes (...) int64.

    Each row's code is where one uniform number falls in its cumulative distribution: one random
    number a row, where Gumbel-max draws k and takes two logarithms of each. The sums are
    float32: a code's probability is exact to within the rounding of the running sum, and one of
    probability 0 is never drawn.
    """
    with torch.autocast(x.device.type, enabled=False):
        rows_x, weight, bias = head_rows(x, weight, bias)  # (N, E), (k, E), (k,)
        n, k = rows_x.shape[0], weight.shape[0]
        rows = rows_per_chunk(n, k, chunk)
        buffer = rows_x.new_empty(rows, k)
        codes = torch.empty(n, dtype=torch.int64, device=x.device)
        for start in range(0, n, rows):
            part = slice(start, min(start + rows, n))
            scores = torch.addmm(bias, rows_x[part], weight.T, out=buffer[:part.stop - start])  # (c, k)
            cdf = scores.sub_(scores.amax(1, keepdim=True)).exp_().cumsum_(1)  # (c, k), unnormalized, in place
            uniform = 1 - torch.rand(cdf.shape[0], 1, generator=generator, device=x.device)  # (c, 1) in (0, 1]
            codes[part] = torch.searchsorted(cdf, uniform * cdf[:, -1:])[:, 0]  # first code whose sum reaches it
    return codes.reshape(x.shape[:-1])


def head_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """x (..., E) as rows (N, E), with weight (k, E) and bias (k,), all in the output layer's dtype: under
    bf16 autocast (GPU) the features come in bf16, and the head runs in fp32."""
    dtype = torch.promote_types(x.dtype, weight.dtype)
    return x.reshape(-1, x.shape[-1]).to(dtype), weight.to(dtype), bias.to(dtype)
