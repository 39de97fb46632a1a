import numpy as np
import pytest

from minivgg import nn
from minivgg.autograd import Tensor, no_grad
from minivgg.inspect import feature_maps
from minivgg.models import build


def test_feature_maps_follow_each_conv_through_its_bn_and_relu():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, rng=rng), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3, rng=rng), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2, rng=rng))
    x = rng.standard_normal((2, 1, 10, 10)).astype(np.float32)
    maps = feature_maps(model, x)
    assert model.training  # mode restored
    assert [name for name, _ in maps] == ["0", "4"]
    model.eval()
    with no_grad():
        expected_first = model[2](model[1](model[0](Tensor(x)))).data
        expected_second = model[:6](Tensor(x)).data
    np.testing.assert_allclose(maps[0][1], expected_first, rtol=1e-6)
    np.testing.assert_allclose(maps[1][1], expected_second, rtol=1e-6)


def test_feature_maps_of_a_zoo_model():
    maps = feature_maps(build("lenet5"), np.ones((1, 1, 28, 28), np.float32))
    assert [m.shape for _, m in maps] == [(1, 6, 28, 28), (1, 16, 10, 10)]


def test_model_without_conv_is_refused():
    with pytest.raises(ValueError, match="no Conv2d"):
        feature_maps(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), np.ones((1, 1, 2, 2), np.float32))
