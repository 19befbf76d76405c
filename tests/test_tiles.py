"""The model's products in fixed tiles: a row's result does not depend on the rows beside it,
where it sits, how many there are or how they are laid out; and they are the library's
products up to float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from videolm.model import tiles


@pytest.mark.bits
@pytest.mark.parametrize("features, out", [(8, 8), (8, 16), (64, 1024), (128, 128), (576, 128)])
def test_a_rows_result_does_not_depend_on_what_shares_its_product(features, out):
    """1, 2, 3 rows (MKL's own path for a few rows), a tile and a bit, rows at every offset, a
    transposed (non-contiguous) input: each row the same bits as in one product over all."""
    torch.manual_seed(0)
    x = torch.randn(3 * tiles.TILE + 5, features)
    weight, bias = torch.randn(out, features), torch.randn(out)
    with torch.no_grad():
        whole = tiles.linear(x, weight, bias)
        assert torch.allclose(whole, F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)
        for start, n in ((0, 1), (7, 2), (100, 3), (1, tiles.TILE + 1), (5, 2 * tiles.TILE)):
            assert torch.equal(tiles.linear(x[start:start + n], weight, bias), whole[start:start + n])
        transposed = x[:300].T.contiguous().T  # the same values, column-major
        assert torch.equal(tiles.linear(transposed, weight, bias), whole[:300])
        assert torch.equal(tiles.linear(x[:50], weight), tiles.linear(x, weight)[:50])  # no bias
        batched = tiles.linear(x[:4 * 60].reshape(4, 6, 10, features), weight, bias)
        assert torch.equal(batched.reshape(-1, out), whole[:240])


@pytest.mark.bits
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_a_convolutions_images_do_not_depend_on_the_batch(kernel):
    torch.manual_seed(kernel)
    layer = nn.Conv2d(8, 16, kernel, padding=kernel // 2)
    x = torch.randn(5, 8, 7, 9)
    with torch.no_grad():
        together = tiles.conv2d(layer, x)
        assert together.shape == (5, 16, 7, 9)
        assert torch.allclose(together, layer(x), rtol=1e-5, atol=1e-5)
        for image in range(5):
            assert torch.equal(tiles.conv2d(layer, x[image:image + 1])[0], together[image])


def test_with_gradients_the_librarys_own_products_run():
    layer = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert torch.equal(tiles.conv2d(layer, x), layer(x))
    rows = x.permute(0, 2, 3, 1)
    assert torch.equal(tiles.linear(rows, layer.weight[:, :, 0, 0]), F.linear(rows, layer.weight[:, :, 0, 0]))
    tiles.conv2d(layer, x).sum().backward()
    assert x.grad is not None
