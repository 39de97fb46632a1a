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
        first = model[2](model[1](model[0](Tensor(x))))
        expected_first = first.data
        # layer by layer, as feature_maps runs them (Sequential would fold the batch norm
        # into the conv, with a different rounding)
        expected_second = model[5](model[4](model[3](first))).data
    np.testing.assert_allclose(maps[0][1], expected_first, rtol=1e-6)
    np.testing.assert_allclose(maps[1][1], expected_second, rtol=1e-6)


def test_feature_maps_of_a_zoo_model():
    maps = feature_maps(build("lenet5"), np.ones((1, 1, 28, 28), np.float32))
    assert [m.shape for _, m in maps] == [(1, 6, 28, 28), (1, 16, 10, 10)]


def test_model_without_conv_is_refused():
    with pytest.raises(ValueError, match="no Conv2d"):
        feature_maps(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), np.ones((1, 1, 2, 2), np.float32))


def _small_net(seed=0):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, rng=rng), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3, rng=rng), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5, rng=rng))
    model[1].running_mean[...] = rng.standard_normal(3) * 0.1
    model[1].running_var[...] = 1 + rng.random(3)
    return model


def test_grad_cam_is_the_gradient_of_the_class_score_over_the_last_conv_maps():
    """Grad-CAM against its definition with a numerical gradient: the derivative of the
    target class's logit with respect to each of the last conv's (post-ReLU) maps."""
    from conftest import numerical_grad
    from minivgg.inspect import grad_cam, grad_cam_from, last_conv_gradient

    model = _small_net()
    x = np.random.default_rng(1).standard_normal((2, 1, 14, 14)).astype(np.float32)
    target = 3
    name, maps, grads, chosen = last_conv_gradient(model, x, target)
    assert name == "4" and list(chosen) == [target, target]
    np.testing.assert_allclose(maps, feature_maps(model, x)[-1][1], rtol=1e-6)

    tail = model[6:]
    model.eval()

    def score(a, i):
        with no_grad():
            return float(tail(Tensor(a[None].astype(np.float32))).data[0, target])

    for i in range(2):
        a = maps[i].astype(np.float64)
        expected = numerical_grad(lambda v: score(v, i), a.copy(), eps=1e-3)
        np.testing.assert_allclose(grads[i], expected, atol=2e-3)
        definition = np.maximum((expected.mean(axis=(1, 2))[:, None, None] * a).sum(axis=0), 0)
        np.testing.assert_allclose(grad_cam_from(maps[i:i + 1], grads[i:i + 1])[0], definition,
                                   atol=2e-3)

    cams, _ = grad_cam(model, x, target)
    assert cams.shape == (2, 14, 14) and cams.min() >= 0
    assert all(c.max() in (0.0, 1.0) for c in cams)  # scaled to [0, 1] per image


def test_grad_cam_predicted_class_and_leaves_the_model_as_it_was():
    from minivgg.inspect import grad_cam

    model = _small_net()
    model.train()
    for p in model.parameters():
        p.grad = np.full_like(p.data, 7.0)
    x = np.random.default_rng(2).standard_normal((3, 1, 14, 14)).astype(np.float32)
    _, chosen = grad_cam(model, x)
    model.eval()
    with no_grad():
        np.testing.assert_array_equal(chosen, model(Tensor(x)).data.argmax(axis=1))
    model.train()
    grad_cam(model, x)
    assert model.training and all((p.grad == 7.0).all() for p in model.parameters())
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(model, x, target=5)


def test_first_conv_filters():
    from minivgg.inspect import first_conv_filters

    model = _small_net()
    name, weights = first_conv_filters(model)
    assert name == "0" and weights.shape == (3, 1, 3, 3)
    np.testing.assert_array_equal(weights, model[0].weight.data)


def test_inspect_figures_are_returned_and_written(tmp_path):
    from matplotlib.figure import Figure

    from minivgg.inspect import grad_cam
    from minivgg.inspect_plots import plot_feature_maps, plot_filters, plot_grad_cam, plot_image_grid

    model = _small_net()
    x = np.random.default_rng(3).standard_normal((1, 1, 14, 14)).astype(np.float32)
    image = np.random.default_rng(4).integers(0, 256, (1, 14, 14), dtype=np.uint8)
    cams, _ = grad_cam(model, x)
    figures = {
        "maps.png": lambda p: plot_feature_maps([(n, m[0]) for n, m in feature_maps(model, x)], image, p),
        "filters.png": lambda p: plot_filters(model[0].weight.data, p),
        "filters3.png": lambda p: plot_filters(np.ones((5, 3, 3, 3)), p),
        "cam.png": lambda p: plot_grad_cam(image, cams[0], p, title="t"),
        "grid.png": lambda p: plot_image_grid(np.stack([image] * 3), ["a", "b", "c"], p),
    }
    for name, draw in figures.items():
        assert isinstance(draw(tmp_path / name), Figure)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(plot_filters(model[0].weight.data), Figure)  # no path: nothing written
    with pytest.raises(ValueError, match="captions"):
        plot_image_grid(np.stack([image] * 2), ["one"])
