"""The model's products one frame at a time: a frame's result does not depend on the frames beside
it or on how its input is laid out, and equals the library's batched product up to float
rounding; with gradients the library's own products run."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from videolm.model import framewise


@pytest.mark.bits
@pytest.mark.parametrize("grid, features, out", [((1, 1), 8, 8), ((1, 3), 8, 16), ((6, 8), 64, 1024),
                                                 ((7, 9), 128, 128), ((30, 40), 64, 128)])
def test_a_frames_result_does_not_depend_on_what_shares_its_product(grid, features, out):
    """Frames of 1 and 3 cells (MKL's own path for a few rows), sizes whose frames are aligned in
    memory and sizes that are not, a transposed (non-contiguous) input: each frame the same bits
    as in one call over all."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, *grid, features)
    weight, bias = torch.randn(out, features), torch.randn(out)
    with torch.no_grad():
        whole = framewise.linear(x, weight, bias)
        assert whole.shape == (3, 4, *grid, out)
        assert torch.allclose(whole, F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)
        for b, t in ((0, 0), (1, 2), (2, 3)):
            assert torch.equal(framewise.linear(x[b, t], weight, bias), whole[b, t])
            assert torch.equal(framewise.linear(x[b:b + 1, t:t + 1], weight, bias)[0, 0], whole[b, t])
        transposed = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # the same values, another layout
        assert torch.equal(framewise.linear(transposed, weight, bias), whole)
        assert torch.equal(framewise.linear(x[1:], weight), framewise.linear(x, weight)[1:])  # no bias


@pytest.mark.bits
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_an_images_convolution_does_not_depend_on_the_batch(kernel):
    torch.manual_seed(kernel)
    layer = nn.Conv2d(8, 16, kernel, padding=kernel // 2)
    x = torch.randn(5, 8, 7, 9)
    with torch.no_grad():
        together = framewise.conv2d(layer, x)
        assert together.shape == (5, 16, 7, 9)
        assert torch.allclose(together, layer(x), rtol=1e-5, atol=1e-5)
        for image in range(5):
            assert torch.equal(framewise.conv2d(layer, x[image:image + 1])[0], together[image])
        assert torch.equal(framewise.conv2d(layer, x.contiguous(memory_format=torch.channels_last)), together)


def test_with_gradients_the_librarys_own_products_run():
    layer = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert torch.equal(framewise.conv2d(layer, x), layer(x))
    rows = x.permute(0, 2, 3, 1)
    assert torch.equal(framewise.linear(rows, layer.weight[:, :, 0, 0]), F.linear(rows, layer.weight[:, :, 0, 0]))
    framewise.conv2d(layer, x).sum().backward()
    assert x.grad is not None
