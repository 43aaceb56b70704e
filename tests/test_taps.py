import pytest
import torch

from transfuse.errors import DataError
from transfuse.taps import check_pooling, parse_layers, pool


def test_parse_layers():
    assert parse_layers("a, b,a,") == ["a", "b"]
    assert parse_layers(["x"]) == ["x"]
    assert parse_layers(None) is None


def test_pool_maps_and_tokens():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.allclose(pool(x, "avg"), x.mean(dim=(2, 3)))
    assert torch.allclose(pool(x, "max"), x.amax(dim=(2, 3)))
    gem = pool(x + 1, "gem")
    assert (gem >= pool(x + 1, "avg") - 1e-5).all() and (gem <= pool(x + 1, "max") + 1e-5).all()
    tokens = torch.randn(2, 5, 4)
    assert torch.equal(pool(tokens, "cls"), tokens[:, 0])
    assert torch.allclose(pool(tokens, "avg", num_prefix_tokens=1), tokens[:, 1:].mean(1))


def test_bad_pooling():
    with pytest.raises(DataError, match="choose one of"):
        check_pooling("median")


def test_avgmax_pools_average_and_maximum_side_by_side():
    x = torch.randn(3, 8, 5, 5)
    both = pool(x, "avgmax")
    assert both.shape == (3, 16)
    torch.testing.assert_close(both, torch.cat([pool(x, "avg"), pool(x, "max")], dim=1))
    tokens = torch.randn(2, 7, 4)
    torch.testing.assert_close(pool(tokens, "avgmax", 1), torch.cat([tokens[:, 1:].mean(1), tokens[:, 1:].amax(1)], 1))
    assert check_pooling("avgmax", "text") == "avgmax"
