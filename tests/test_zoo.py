"""Zoo: exact parameter totals and torch parity of every model's logits and gradients."""
import numpy as np
import pytest

import minivgg
from minivgg import functional as F
from minivgg.interop import to_torch
from minivgg.models import MODELS, build, get_model_spec, UnknownModelError
from parity import assert_model_matches_torch

SIZES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32)}

EXPECTED_PARAMS = {
    "vgg_v1": 94_474, "vgg_v2": 95_818, "minivggnet": 2_169_770, "mnist_8k_a": 7_998,
    "mnist_8k_b": 7_936, "mnist_5k": 5_178, "mnist_7k": 7_304, "mnist_20k": 9_458, "lenet5": 61_750,
    "minivgg_fashion": 871_530, "minivggnet_light": 2_169_770, "minivgg_fashion_light": 871_530,
    "airbench94": 1_972_792,
}
# frozen parameters: airbench94's whitening filters and BatchNorm scales
FROZEN_PARAMS = {"airbench94": 3 * 24 * 2 * 2 + 64 * 2 + 256 * 4}


def _build(name, seed=0):
    c, size = SIZES[MODELS[name].default_dataset]
    return build(name, in_channels=c, image_size=size, seed=seed), c, size


def test_every_model_has_an_expected_count():
    assert set(EXPECTED_PARAMS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_totals(name):
    model, _, _ = _build(name)
    assert model.num_parameters() == EXPECTED_PARAMS[name]
    assert model.num_parameters(trainable_only=True) == EXPECTED_PARAMS[name] - FROZEN_PARAMS.get(name, 0)


def test_minivggnet_on_mnist_shapes():
    model = build("minivggnet", in_channels=1, image_size=28)
    out = model(minivgg.Tensor(np.zeros((2, 1, 28, 28), np.float32)))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("heavy_name, light_name", [("minivggnet", "minivggnet_light"),
                                                     ("minivgg_fashion", "minivgg_fashion_light")])
def test_light_variants_differ_only_in_dropout(heavy_name, light_name):
    def dropout_rates(name):
        return [m.p for m in build(name).modules() if type(m).__name__ == "Dropout"]
    assert dropout_rates(heavy_name) == [0.25, 0.25, 0.5]
    assert dropout_rates(light_name) == [0.1, 0.1, 0.3]
    heavy, light = build(heavy_name, seed=3), build(light_name, seed=3)
    for a, b in zip(heavy.state_dict().values(), light.state_dict().values()):
        np.testing.assert_array_equal(a, b)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError, match="valid models: vgg_v1"):
        get_model_spec("resnet50")


def test_sub8k_nets_need_28px():
    with pytest.raises(ValueError, match="28x28"):
        build("mnist_5k", in_channels=3, image_size=32)


def test_seed_makes_init_deterministic():
    a, _, _ = _build("mnist_5k", seed=3)
    b, _, _ = _build("mnist_5k", seed=3)
    c, _, _ = _build("mnist_5k", seed=4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def _perturb_running_stats(model, rng):
    """Non-trivial BN running statistics, so eval-mode normalisation is not the identity."""
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = rng.normal(0, 0.1, value.shape).astype(value.dtype)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
    model.load_state_dict(state)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_torch_parity_float32_eval(name, torch):
    """float32 logits and gradients in eval mode with freshly initialised BN statistics."""
    model, c, size = _build(name, seed=1)
    model.eval()
    twin = to_torch(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, c, size, size)).astype(np.float32)
    assert_model_matches_torch(torch, model, twin, x, np.array([0, 3, 7, 9]), rtol=1e-3,
                               atol=1e-4, name=name)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_torch_parity_float64_perturbed_bn(name, torch):
    """float64, eval mode, non-trivial running statistics: equal to rounding.

    (In float32 with shifted running statistics, ReLU's zero regions become constant
    plateaus in front of max pooling; which of several equal maxima gets the gradient then
    depends on GEMM rounding, in torch as in minivgg. float64 removes that ambiguity.)
    """
    model, c, size = _build(name, seed=1)
    model.eval()
    rng = np.random.default_rng(0)
    _perturb_running_stats(model, rng)
    model.astype(np.float64)
    twin = to_torch(model).double()
    x = rng.standard_normal((4, c, size, size))
    assert_model_matches_torch(torch, model, twin, x, np.array([0, 3, 7, 9]), rtol=1e-9,
                               atol=1e-10, name=name)


@pytest.mark.parametrize("name", ["minivggnet", "mnist_8k_b", "vgg_v2", "airbench94"])
def test_torch_parity_in_training_mode(name, torch):
    """Train-mode BN (batch statistics) with dropout disabled on both sides."""
    model, c, size = _build(name, seed=2)
    for m in model.modules():
        if hasattr(m, "p") and getattr(m, "stochastic", False):
            m.p = 0.0
    twin = to_torch(model)
    for m in twin.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d)):
            m.p = 0.0
    x = np.random.default_rng(5).standard_normal((8, c, size, size)).astype(np.float32)
    y = np.arange(8) % 10
    loss = F.cross_entropy(model(minivgg.Tensor(x)), y)
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    np.testing.assert_allclose(float(loss.data), float(tloss.detach()), rtol=1e-4)
    tparams = dict(twin.named_parameters())
    # A conv bias right before a training-mode BatchNorm has a true gradient of exactly 0
    # (both sides return ~1e-8 of rounding), so tolerances are relative to the model's
    # largest gradient, not to each parameter's own. 5e-5 of it leaves room for a float32
    # near-tie in a max-pool window routing a gradient differently (seen: 1 of 9,216 weights).
    scale = max(float(np.abs(p.grad.numpy()).max()) for p in twin.parameters() if p.requires_grad)
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # airbench94's frozen whitening filters and BatchNorm scales
            assert p.grad is None and tparams[pname].grad is None, pname
            continue
        tg = tparams[pname].grad.numpy()
        np.testing.assert_allclose(p.grad, tg, rtol=1e-3, atol=5e-5 * scale, err_msg=pname)
    for key, value in model.state_dict().items():
        if "running" in key:
            np.testing.assert_allclose(value, twin.state_dict()[key].numpy(), rtol=1e-4, atol=1e-6)


def test_airbench94_init_is_a_partial_identity_with_frozen_parts():
    model = build("airbench94", seed=0)
    convs = [m for m in model.modules() if isinstance(m, minivgg.nn.Conv2d)]
    for conv in convs[1:]:
        w = conv.weight.data
        identity = np.zeros((conv.in_channels,) + w.shape[1:], np.float32)
        identity[np.arange(conv.in_channels), np.arange(conv.in_channels), 1, 1] = 1
        np.testing.assert_array_equal(w[:conv.in_channels], identity)
        if conv.out_channels > conv.in_channels:   # the rest keep torch's default init
            assert np.abs(w[conv.in_channels:]).max() > 0
    assert np.all(convs[0].bias.data == 0) and not convs[0].weight.requires_grad
    norms = [m for m in model.modules() if isinstance(m, minivgg.nn.BatchNorm2d)]
    assert all(not bn.weight.requires_grad and bn.bias.requires_grad and bn.momentum == 0.4
               for bn in norms)
    assert type(list(model)[-1]).__name__ == "Scale" and list(model)[-1].factor == 1 / 9
