"""minivgg.nn and minivgg.init against torch.nn: state_dict keys and layouts, forward and
backward parity for every layer, BatchNorm running statistics, loading, modes, init, repr."""
from collections import OrderedDict

import numpy as np
import pytest

import minivgg.functional as F
from every_layer import INPUT_SHAPE, every_layer_model, layer_classes
from parity import assert_module_matches_torch, torch_state
from minivgg import Tensor, init, nn
from minivgg.autograd import no_grad
from minivgg.interop import to_torch


def _randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# every layer against torch.nn's with the same weights: outputs, gradients, buffers
TOLERANCE = dict(atol=1e-5, rtol=1e-4)


# ---- parity for every layer ------------------------------------------------------------------
CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=2, out_channels=5, kernel_size=(3, 2), stride=2, padding=1, bias=False),
    dict(in_channels=3, out_channels=2, kernel_size=3, padding="same"),
    dict(in_channels=1, out_channels=3, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1)),
    dict(in_channels=2, out_channels=2, kernel_size=3, padding="valid"),
]


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_conv2d_parity(torch, kwargs):
    ours = nn.Conv2d(**kwargs, rng=0)
    theirs = torch.nn.Conv2d(**kwargs)
    x = _randn(np.random.default_rng(0), 2, kwargs["in_channels"], 7, 6)
    assert_module_matches_torch(torch, ours, theirs, x, **TOLERANCE)
    assert ours.weight.data.shape == tuple(theirs.weight.shape)  # OIHW


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_parity(torch, shape, bias):
    assert_module_matches_torch(torch, nn.Linear(5, 3, bias=bias, rng=0),
                                torch.nn.Linear(5, 3, bias=bias),
                                _randn(np.random.default_rng(0), *shape), **TOLERANCE)


@pytest.mark.parametrize("make", [
    lambda m: m.MaxPool2d(2),
    lambda m: m.MaxPool2d(3, stride=2, padding=1),
    lambda m: m.AvgPool2d(2),
    lambda m: m.AvgPool2d(3, stride=2, padding=1),
    lambda m: m.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    lambda m: m.AdaptiveAvgPool2d((1, 1)),
    lambda m: m.AdaptiveAvgPool2d((3, 2)),
    lambda m: m.ReLU(),
    lambda m: m.ELU(alpha=0.7),
    lambda m: m.LeakyReLU(negative_slope=0.2),
    lambda m: m.GELU(),
    lambda m: m.GELU(approximate="tanh"),
    lambda m: m.Tanh(),
    lambda m: m.Sigmoid(),
    lambda m: m.Flatten(),
    lambda m: m.Flatten(start_dim=2),
    lambda m: m.Identity(),
], ids=lambda make: "")
def test_parameter_free_layer_parity(torch, make):
    x = _randn(np.random.default_rng(0), 2, 3, 7, 6)
    assert_module_matches_torch(torch, make(nn), make(torch.nn), x, **TOLERANCE)


@pytest.mark.parametrize("kind, shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)),
                                         ("BatchNorm2d", (4, 3, 5, 4))])
@pytest.mark.parametrize("options", [dict(), dict(momentum=None), dict(momentum=0.3, eps=1e-3),
                                     dict(affine=False), dict(bias=False),
                                     dict(track_running_stats=False)])
def test_batchnorm_train_then_eval_matches_torch(torch, kind, shape, options):
    ours, theirs = getattr(nn, kind)(3, **options), getattr(torch.nn, kind)(3, **options)
    with torch.no_grad():  # non-trivial affine parameters, so their gradients are tested too
        if theirs.weight is not None:
            theirs.weight.uniform_(0.5, 1.5)
        if theirs.bias is not None:
            theirs.bias.uniform_(-0.5, 0.5)
    x = 2 + 3 * _randn(np.random.default_rng(0), *shape)
    assert_module_matches_torch(torch, ours, theirs, x, steps=4, **TOLERANCE)
    if ours.track_running_stats:
        assert ours.num_batches_tracked.dtype == np.int64
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 4
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5)
    else:
        assert ours.running_mean is None and list(ours.state_dict()) == list(theirs.state_dict())
    ours.eval(), theirs.eval()
    assert_module_matches_torch(torch, ours, theirs, x - 1, steps=2, **TOLERANCE)
    if ours.track_running_stats:
        assert int(ours.num_batches_tracked) == 4  # eval does not count batches


def test_batchnorm_momentum_none_is_the_cumulative_average(torch):
    bn = nn.BatchNorm1d(2, momentum=None)
    batches = [_randn(np.random.default_rng(i), 5, 2) * (i + 1) for i in range(3)]
    for batch in batches:
        bn(batch)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(0) for b in batches], axis=0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], axis=0), rtol=1e-5)


def test_layernorm_parity(torch):
    rng = np.random.default_rng(0)
    for shape, normalized in [((4, 6), 6), ((2, 3, 4, 5), (4, 5))]:
        ours, theirs = nn.LayerNorm(normalized), torch.nn.LayerNorm(normalized)
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
        assert_module_matches_torch(torch, ours, theirs, _randn(rng, *shape), **TOLERANCE)
    for options in (dict(elementwise_affine=False), dict(bias=False)):
        assert_module_matches_torch(torch, nn.LayerNorm(5, **options),
                                    torch.nn.LayerNorm(5, **options), _randn(rng, 3, 5),
                                    **TOLERANCE)


def test_dropout_in_eval_mode_and_p0_is_identity_like_torch(torch):
    x = _randn(np.random.default_rng(0), 2, 3, 4, 4)
    for kind in ("Dropout", "Dropout2d"):
        assert_module_matches_torch(torch, getattr(nn, kind)(0.5, rng=0).eval(),
                                    getattr(torch.nn, kind)(0.5).eval(), x, **TOLERANCE)
        assert_module_matches_torch(torch, getattr(nn, kind)(0.0, rng=0),
                                    getattr(torch.nn, kind)(0.0), x, **TOLERANCE)


def _everything(m, rng=None):
    """One Sequential with every layer kind, in `m` = minivgg.nn or torch.nn."""
    extra = {} if rng is None else {"rng": rng}
    return m.Sequential(
        m.Conv2d(3, 8, 3, padding=1, **extra), m.BatchNorm2d(8), m.ReLU(),
        m.Conv2d(8, 8, 3, padding="same", bias=False, **extra), m.BatchNorm2d(8, momentum=None),
        m.ELU(), m.MaxPool2d(2), m.Dropout2d(0.1, **extra),
        m.Conv2d(8, 6, (3, 1), stride=(1, 2), **extra), m.LeakyReLU(0.1), m.AvgPool2d(2),
        m.AdaptiveAvgPool2d((2, 2)), m.Flatten(),
        m.Sequential(m.Linear(24, 16, **extra), m.LayerNorm(16), m.GELU()),
        m.BatchNorm1d(16, affine=False), m.Tanh(), m.Dropout(0.2, **extra),
        m.Linear(16, 10, bias=False, **extra), m.Sigmoid(), m.Identity(),
    )


def test_sequential_of_every_layer_kind_matches_torch(torch):
    torch.manual_seed(0)
    ours, theirs = _everything(nn, rng=0), _everything(torch.nn)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state)  # same keys, same order
    for key, value in their_state.items():
        assert ours_state[key].shape == tuple(value.shape), key
        assert ours_state[key].dtype == value.numpy().dtype, key  # float32, int64 counters
    assert ours_state["1.num_batches_tracked"].shape == ()
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    x = _randn(np.random.default_rng(0), 4, 3, 12, 12)
    assert_module_matches_torch(torch, ours.eval(), theirs.eval(), x, steps=2, **TOLERANCE)


def test_sequential_train_parity_with_dropout_disabled(torch):
    torch.manual_seed(1)
    ours, theirs = _everything(nn, rng=0), _everything(torch.nn)
    for model in (ours, theirs):
        model[7].p = model[16].p = 0.0
    x = _randn(np.random.default_rng(3), 4, 3, 12, 12)
    assert_module_matches_torch(torch, ours.train(), theirs.train(), x, steps=3, **TOLERANCE)
    assert int(ours[1].num_batches_tracked) == 3


def test_our_state_dict_loads_into_torch_strictly(torch):
    ours, theirs = _everything(nn, rng=5), _everything(torch.nn)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ours.state_dict()[key])


def test_torch_tensors_load_directly_and_keep_float32(torch):
    theirs = torch.nn.Linear(4, 3).double()
    ours = nn.Linear(4, 3, rng=0)
    ours.load_state_dict(theirs.state_dict())  # float64 torch tensors
    assert ours.weight.data.dtype == np.float32
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-6)
    ours.load_state_dict({"weight": [[1.0] * 4] * 3, "bias": (0, 1, 2)})  # anything np.asarray takes
    assert ours.weight.data.dtype == np.float32 and ours.bias.data.dtype == np.float32
    np.testing.assert_array_equal(ours.bias.data, [0, 1, 2])


def test_the_every_layer_model_holds_every_layer():
    assert {type(m) for m in every_layer_model().modules()} == layer_classes()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own
def test_every_layer_declares_its_torch_twin(torch):
    """to_torch on a model of every layer: the same state_dict keys, and in eval mode (with
    running statistics away from 0 and 1) the same output."""
    model = every_layer_model()
    rng = np.random.default_rng(4)
    for module in model.modules():
        if getattr(module, "running_var", None) is not None:
            module.running_mean[...] = rng.normal(0, 0.5, module.running_mean.shape)
            module.running_var[...] = rng.uniform(0.3, 2.0, module.running_var.shape)
    model.eval()
    twin = to_torch(model)
    assert list(twin.state_dict()) == list(model.state_dict()) and not twin.training
    x = _randn(rng, 5, *INPUT_SHAPE)
    with no_grad():
        ours = model(Tensor(x)).data
    np.testing.assert_allclose(ours, twin(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_a_layer_without_a_torch_twin_is_named(torch):
    class Odd(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="no torch.nn equivalent known for Odd"):
        to_torch(nn.Sequential(nn.ReLU(), Odd()))


# ---- state_dict and loading ------------------------------------------------------------------------
def test_state_dict_returns_copies():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.BatchNorm1d(2))
    state = model.state_dict()
    assert isinstance(state, OrderedDict)
    state["0.weight"][...] = 7
    state["1.num_batches_tracked"][...] = 9
    assert not np.any(model[0].weight.data == 7)
    assert int(model[1].num_batches_tracked) == 0


def test_load_is_in_place_so_optimizers_keep_their_references():
    layer = nn.Linear(3, 2, rng=0)
    weight, data = layer.weight, layer.weight.data
    layer.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros(2)})
    assert layer.weight is weight and layer.weight.data is data
    np.testing.assert_array_equal(data, 1)


def _model():
    return nn.Sequential(nn.Conv2d(1, 6, 3, bias=False, rng=0), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Flatten(), nn.Linear(24, 10, rng=0))


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    model = _model()
    before = model.state_dict()
    state = _model().initialize(np.random.default_rng(9)).state_dict()
    state["1.running_mean"] += 5  # a valid entry that must not be applied
    del state["4.bias"]  # missing
    state["4.scale"] = np.ones(3)  # unexpected
    state["0.weight"] = np.zeros((6, 3, 3, 3), np.float32)  # wrong shape
    with pytest.raises(nn.StateDictError) as caught:
        model.load_state_dict(state)
    message = str(caught.value)
    assert "missing keys" in message and "4.bias" in message
    assert "unexpected keys" in message and "4.scale" in message
    assert "0.weight" in message and "(6, 3, 3, 3)" in message and "(6, 1, 3, 3)" in message
    assert "Conv2d(1, 6, kernel_size=(3, 3), stride=(1, 1), bias=False)" in message
    assert "nothing was changed" in message
    assert isinstance(caught.value, ValueError)
    assert caught.value.missing_keys == ["4.bias"] and caught.value.unexpected_keys == ["4.scale"]
    after = model.state_dict()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_non_strict_load_reports_keys_but_still_rejects_shapes():
    model = _model()
    state = _model().initialize(np.random.default_rng(9)).state_dict()
    del state["4.bias"]
    state["extra"] = np.ones(1)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["4.bias"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(model[4].weight.data, state["4.weight"])
    state["4.weight"] = np.ones((10, 25))
    with pytest.raises(nn.StateDictError, match=r"4\.weight.*Linear.*\(10, 25\).*\(10, 24\)"):
        model.load_state_dict(state, strict=False)


def test_load_rejects_non_numeric_values_and_non_mappings():
    layer = nn.Linear(2, 1, rng=0)
    with pytest.raises(nn.StateDictError, match="weight.*numeric"):
        layer.load_state_dict({"weight": np.array([["a", "b"]]), "bias": np.zeros(1)})
    with pytest.raises(TypeError, match="mapping"):
        layer.load_state_dict([np.zeros((1, 2)), np.zeros(1)])


def test_non_persistent_buffers_are_not_saved():
    module = nn.Module()
    module.register_buffer("kept", np.zeros(2))
    module.register_buffer("scratch", np.ones(3), persistent=False)
    module.register_buffer("absent", None)
    assert list(module.state_dict()) == ["kept"]
    assert [name for name, _ in module.named_buffers()] == ["kept", "scratch"]


# ---- the Module machinery -------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self, rng=None):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, rng=rng)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 3, rng=rng))
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.register_buffer("steps", np.zeros((), np.int64))
        self.note = "plain attribute"

    def forward(self, x):
        return self.head(self.bn(self.conv(x))) * self.scale


def test_attribute_assignment_registers_like_torch(torch):
    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.bn = torch.nn.BatchNorm2d(2)
            self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

        def forward(self, x):
            return self.head(self.bn(self.conv(x))) * self.scale

    net, theirs = Net(rng=0), TorchNet()
    assert list(net.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in net.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in net.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in net.named_children()] == [n for n, _ in theirs.named_children()]
    assert list(net.children()) == [net.conv, net.bn, net.head]
    assert len(list(net.modules())) == 6 and len(list(net.parameters())) == 7
    assert net.note == "plain attribute" and "note" not in net.state_dict()
    assert_module_matches_torch(torch, net, theirs, _randn(np.random.default_rng(0), 2, 1, 4, 4),
                                **TOLERANCE)


def test_registry_rules():
    net = Net(rng=0)
    with pytest.raises(TypeError, match="scale"):
        net.scale = np.ones(1)  # a parameter slot takes a Parameter (or None)
    net.scale = None
    assert "scale" not in net.state_dict()
    del net.bn
    assert not any(key.startswith("bn.") for key in net.state_dict())
    with pytest.raises(AttributeError, match="no attribute 'bn'"):
        net.bn

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Early()
    with pytest.raises(KeyError):
        net.register_buffer("a.b", np.zeros(1))
    with pytest.raises(TypeError):
        net.register_buffer("t", Tensor(np.zeros(1)))


def test_shared_parameters_are_listed_once_but_saved_under_each_name():
    shared = nn.Linear(2, 2, rng=0)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_zero_grad_num_parameters_and_freezing():
    net = Net(rng=0)
    net(np.ones((2, 1, 4, 4), np.float32)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    total = 2 * 9 + 2 + 2 + 2 + 8 * 3 + 3 + 1
    assert net.num_parameters() == total
    net.conv.requires_grad_(False)
    assert net.num_parameters(trainable_only=True) == total - 20
    assert isinstance(net.conv.weight, nn.Parameter) and net.conv.weight.requires_grad is False


def test_parameters_are_float32_parameters():
    for layer in (nn.Conv2d(2, 3, 3), nn.Linear(3, 4), nn.BatchNorm2d(3), nn.LayerNorm(3)):
        for name, p in layer.named_parameters():
            assert isinstance(p, nn.Parameter) and p.requires_grad, name
            assert p.data.dtype == np.float32, name
    assert nn.BatchNorm1d(3).running_mean.dtype == np.float32


def test_sequential_container_behaviour():
    a, b, c = nn.ReLU(), nn.Tanh(), nn.Sigmoid()
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    seq.append(c)
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and list(tail) == [b, c]
    assert [n for n, _ in tail.named_children()] == ["1", "2"]  # torch keeps the names
    seq.insert(0, nn.Identity())
    del seq[1]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"] and seq[1] is b
    with pytest.raises(IndexError):
        seq[3]
    named = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 2, 3, rng=0)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"]
    assert named.conv is named[0]


# ---- modes and randomness -------------------------------------------------------------------------
def test_train_and_eval_toggle_dropout_and_batchnorm():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Dropout(0.5, rng=0))
    assert model.training and model[1].training
    x = 3 + _randn(np.random.default_rng(0), 64, 4)
    y_train = model(x).data
    assert np.mean(y_train == 0) > 0.3  # dropout active
    assert model.eval() is model and not model[0].training and not model[1].training
    y_eval = model(x).data
    assert np.all(y_eval != 0)  # dropout off
    bn = model[0]
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)  # running statistics
    model.train()
    assert model[0].training and model[1].training


def test_dropout_masks_scale_and_gradient():
    drop = nn.Dropout(0.25, rng=0)
    x = Tensor(np.ones((200, 50), np.float32), requires_grad=True)
    y = drop(x)
    kept = y.data != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y.data[kept], 1 / 0.75, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, y.data, rtol=1e-6)
    channels = nn.Dropout2d(0.5, rng=0)(np.ones((8, 16, 3, 3), np.float32)).data
    per_channel = channels.reshape(8, 16, 9)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # whole channels
    assert 0 < np.mean(per_channel[..., 0] == 0) < 1


def test_set_rng_makes_dropout_reproducible():
    model = nn.Sequential(nn.Linear(8, 8, rng=0), nn.Dropout(0.5), nn.Dropout(0.5))
    x = np.ones((16, 8), np.float32)

    def masks(seed):
        model.set_rng(np.random.default_rng(seed))
        first = model[:2](x).data != 0
        return first, model(x).data != 0

    a, b, c = masks(3), masks(3), masks(4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert model[1].rng is not model[2].rng
    first = model[1].rng.random(4)
    model.set_rng(3)  # an int seed works too
    assert not np.array_equal(model[1].rng.random(4), model[2].rng.random(4))  # independent
    assert not np.array_equal(model[1].rng.random(4), first)  # advanced, not reset


def test_initialize_is_deterministic_per_seed():
    def weights(seed):
        model = _everything(nn).initialize(np.random.default_rng(seed))
        return model.state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    assert not np.array_equal(a["17.weight"], c["17.weight"])
    np.testing.assert_array_equal(nn.Conv2d(2, 3, 3, rng=7).weight.data,
                                  nn.Conv2d(2, 3, 3, rng=7).weight.data)


def test_initialize_resets_batchnorm_to_torch_defaults():
    model = nn.Sequential(nn.BatchNorm2d(3))
    model(_randn(np.random.default_rng(0), 4, 3, 2, 2) + 2)
    model[0].weight.data[...] = 5
    model.initialize(0)
    bn = model[0]
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.bias.data, 0)


@pytest.mark.parametrize("make, fan_in", [
    (lambda m, **kw: m.Linear(800, 600, **kw), 800),
    (lambda m, **kw: m.Conv2d(64, 96, 3, **kw), 576),
])
def test_default_init_matches_torch_distribution(torch, make, fan_in):
    torch.manual_seed(0)
    ours, theirs = make(nn, rng=0), make(torch.nn)
    bound = 1 / np.sqrt(fan_in)
    for name in ("weight", "bias"):
        mine = getattr(ours, name).data
        ref = getattr(theirs, name).detach().numpy()
        assert mine.dtype == np.float32
        assert np.abs(mine).max() <= bound * (1 + 1e-6)
        assert np.abs(mine).max() > 0.95 * bound
        std = bound / np.sqrt(3)  # of U(-bound, bound)
        assert abs(mine.mean()) < 5 * std / np.sqrt(mine.size)
        np.testing.assert_allclose(mine.std(), std, rtol=0.1 if name == "bias" else 0.01)
        np.testing.assert_allclose(mine.std(), ref.std(), rtol=0.2 if name == "bias" else 0.02)


# ---- init functions -------------------------------------------------------------------------------
def test_init_functions_follow_torch_formulas(torch):
    rng = np.random.default_rng(0)
    shape = (256, 128, 3, 3)
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(np.empty(shape))
    assert (fan_in, fan_out) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    for args in [("linear",), ("relu",), ("tanh",), ("leaky_relu",), ("leaky_relu", 0.2), ("sigmoid",)]:
        assert init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args))
    cases = [
        (lambda t, r: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", rng=r),
         lambda t: torch.nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")),
        (lambda t, r: init.kaiming_uniform_(t, a=0.1, rng=r),
         lambda t: torch.nn.init.kaiming_uniform_(t, a=0.1)),
        (lambda t, r: init.xavier_uniform_(t, gain=2.0, rng=r),
         lambda t: torch.nn.init.xavier_uniform_(t, gain=2.0)),
        (lambda t, r: init.xavier_normal_(t, rng=r), lambda t: torch.nn.init.xavier_normal_(t)),
        (lambda t, r: init.normal_(t, 1.0, 0.5, rng=r), lambda t: torch.nn.init.normal_(t, 1.0, 0.5)),
        (lambda t, r: init.uniform_(t, -2.0, 3.0, rng=r), lambda t: torch.nn.init.uniform_(t, -2.0, 3.0)),
    ]
    torch.manual_seed(0)
    for ours_fn, torch_fn in cases:
        param = nn.Parameter(np.zeros(shape, np.float32))
        assert ours_fn(param, rng) is param
        ref = torch_fn(torch.empty(shape)).numpy()
        assert param.data.dtype == np.float32
        np.testing.assert_allclose(param.data.std(), ref.std(), rtol=0.01)
        np.testing.assert_allclose(param.data.mean(), ref.mean(), atol=0.01 * ref.std() + 1e-3)
        np.testing.assert_allclose([param.data.min(), param.data.max()],
                                   [ref.min(), ref.max()], rtol=0.2)
    array = np.empty((3, 4), np.float32)
    assert init.constant_(array, 0.5) is array and np.all(array == 0.5)
    init.zeros_(array)
    assert np.all(array == 0)
    init.ones_(array)
    assert np.all(array == 1)


def test_init_validates_arguments():
    with pytest.raises(TypeError, match="Generator"):
        init.uniform_(np.zeros(3, np.float32), rng=0)
    with pytest.raises(TypeError):
        init.normal_(np.zeros(3, np.float32))  # rng is required
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.kaiming_uniform_(np.zeros(3, np.float32), rng=np.random.default_rng())
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(np.zeros((3, 3), np.float32), mode="fan", rng=np.random.default_rng())
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(TypeError, match="floating-point"):
        init.zeros_(np.zeros(3, np.int64))


# ---- repr -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda m: m.Conv2d(1, 6, 3, bias=False),
    lambda m: m.Conv2d(3, 16, (3, 5), stride=2, padding=1),
    lambda m: m.Conv2d(3, 16, 3, padding="same"),
    lambda m: m.Linear(4, 2),
    lambda m: m.Linear(4, 2, bias=False),
    lambda m: m.BatchNorm2d(8),
    lambda m: m.BatchNorm1d(8, momentum=None, affine=False),
    lambda m: m.BatchNorm1d(8, bias=False),
    lambda m: m.LayerNorm((4, 5), elementwise_affine=False),
    lambda m: m.LayerNorm(6, bias=False),
    lambda m: m.AvgPool2d(2),
    lambda m: m.AdaptiveAvgPool2d((1, 1)),
    lambda m: m.ELU(alpha=0.5),
    lambda m: m.LeakyReLU(),
    lambda m: m.GELU(approximate="tanh"),
    lambda m: m.Sequential(m.Conv2d(1, 2, 3), m.ReLU(), m.Sequential(m.Tanh(), m.Identity())),
], ids=lambda make: "")
def test_repr_equals_torch(torch, make):
    assert repr(make(nn)) == repr(make(torch.nn))


def test_repr_of_layers_with_fewer_options_than_torch():
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.Dropout()) == "Dropout(p=0.5)"
    assert repr(nn.Dropout2d(0.2)) == "Dropout2d(p=0.2)"
    assert repr(nn.Flatten()) == "Flatten(start_dim=1)"
    assert repr(nn.AvgPool2d(3, 1, 1, count_include_pad=False)) == \
        "AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)"
    assert repr(nn.Parameter(np.zeros(2, np.float32))).startswith("Parameter containing:")


# ---- input validation -------------------------------------------------------------------------------
def test_layers_name_themselves_and_the_shapes_on_bad_input():
    conv = nn.Conv2d(1, 6, 3, rng=0)
    with pytest.raises(ValueError, match=r"^Conv2d\(1, 6, kernel_size=\(3, 3\), stride=\(1, 1\)\): "
                                         r"expected input of shape \(N, 1, H, W\), got \(8, 3, 32, 32\)$"):
        conv(np.zeros((8, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d.*\(N, 1, H, W\), got \(1, 32, 32\)"):
        conv(np.zeros((1, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"Linear\(in_features=4.*\(N, 4\), got \(2, 5\)"):
        nn.Linear(4, 2, rng=0)(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3,.*\(N, 3, H, W\), got \(2, 4, 5, 5\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3,.*got \(2, 3\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3,.*\(N, 3\) or \(N, 3, L\), got \(2, 3, 4, 4\)"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"LayerNorm\(\(5,\).*got \(2, 4\)"):
        nn.LayerNorm(5)(np.zeros((2, 4), np.float32))


def test_sequential_says_which_layer_failed_and_keeps_the_type():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.ReLU(),
                          nn.Sequential(nn.Flatten(), nn.Linear(10, 2, rng=0)))
    with pytest.raises(ValueError, match=r"^layer 0 \(Conv2d\): Conv2d\(3, 4.*got \(2, 1, 8, 8\)"):
        model(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"^layer 2 \(Sequential\): layer 1 \(Linear\): "
                                         r"Linear\(in_features=10.*got \(2, 144\)"):
        model(np.zeros((2, 3, 8, 8), np.float32))

    class Boom(nn.Module):
        def forward(self, x):
            raise TypeError("bad thing")

    named = nn.Sequential(OrderedDict([("stem", nn.ReLU()), ("boom", Boom())]))
    with pytest.raises(TypeError, match=r"^layer boom \(Boom\): bad thing$"):
        named(np.zeros(2, np.float32))


@pytest.mark.parametrize("make, pattern", [
    (lambda: nn.Conv2d(1, 2, 0), "kernel_size"),
    (lambda: nn.Conv2d(0, 2, 3), "in_channels"),
    (lambda: nn.Conv2d(1, 2, 3, padding=-1), "padding"),
    (lambda: nn.Conv2d(1, 2, 3, padding="full"), "padding"),
    (lambda: nn.Conv2d(1, 2, 3, stride=2, padding="same"), "strided"),
    (lambda: nn.Linear(0, 2), "in_features"),
    (lambda: nn.BatchNorm2d(3, momentum=2.0), "momentum"),
    (lambda: nn.BatchNorm2d(3, eps=0), "eps"),
    (lambda: nn.Dropout(1.5), "p must be"),
    (lambda: nn.GELU(approximate="fast"), "approximate"),
    (lambda: nn.MaxPool2d(0), "kernel_size"),
    (lambda: nn.AvgPool2d(2, padding=-1), "padding"),
    (lambda: nn.MaxPool2d(2, padding=2), "at most half of kernel_size"),
], ids=lambda value: "" if callable(value) else value)
def test_constructor_validation(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize("build, call", [
    (lambda: nn.Dropout(1.5), lambda x: F.dropout(x, 1.5)),
    (lambda: nn.Dropout2d(-0.1), lambda x: F.dropout2d(x, -0.1)),
    (lambda: nn.GELU(approximate="fast"), lambda x: F.gelu(x, "fast")),
    (lambda: nn.MaxPool2d(2, padding=2), lambda x: F.max_pool2d(x, 2, padding=2)),
    (lambda: nn.AvgPool2d((2, 0)), lambda x: F.avg_pool2d(x, (2, 0))),
    (lambda: nn.Conv2d(1, 1, 3, padding=(1, -1)),
     lambda x: F.conv2d(x, np.ones((1, 1, 3, 3), np.float32), padding=(1, -1))),
    (lambda: nn.Conv2d(1, 1, 3, stride=2, padding="same"),
     lambda x: F.conv2d(x, np.ones((1, 1, 3, 3), np.float32), stride=2, padding="same")),
])
def test_a_layer_checks_its_arguments_with_its_op_when_built(build, call):
    """The layer fails when it is built, with the op's own message under the layer's name."""
    with pytest.raises(ValueError) as built:
        build()
    with pytest.raises(ValueError) as called:
        call(np.ones((1, 1, 6, 6), np.float32))
    layer_name, layer_message = str(built.value).split(": ", 1)
    op_name, op_message = str(called.value).split(": ", 1)
    assert layer_name.lower() == op_name.replace("_", "").lower()
    assert layer_message == op_message


def test_layers_take_array_sizes():
    conv = nn.Conv2d(1, 2, np.array([3, 2]), stride=np.array([1, 2]), rng=0)
    assert conv.kernel_size == (3, 2) and conv.stride == (1, 2)
    assert conv(np.ones((1, 1, 5, 5), np.float32)).shape == (1, 2, 3, 2)


def test_rng_argument_validation():
    with pytest.raises(TypeError, match="Generator"):
        nn.Linear(2, 2, rng="seed")
    with pytest.raises(TypeError, match="Generator"):
        nn.Sequential(nn.Dropout()).set_rng(1.5)


def _fused_and_apart(build, relus, batchnorms, x):
    """Outputs, parameter gradients and running stats of build() run with its ReLU -> BN and
    BN -> ReLU pairs fused, then with a forward hook on each ReLU (as summary.py has), which
    keeps the layers apart. Checks F.relu ran only in the second."""
    runs = []
    for apart in (False, True):
        model = build()
        if apart:
            for i in relus:
                model[i].register_forward_hook(lambda module, args, output: None)
        calls = []
        original = F.relu
        try:
            F.relu = lambda t: calls.append(1) or original(t)
            y = model(Tensor(x.copy()))
        finally:
            F.relu = original
        assert len(calls) == (len(relus) if apart else 0)
        y.backward(np.ones(y.shape, np.float32))
        runs.append([y.data] + [p.grad for p in model.parameters()]
                    + [model[i].running_var.copy() for i in batchnorms]
                    + [model[i].running_mean.copy() for i in batchnorms])
    return runs


def test_sequential_fuses_relu_then_batchnorm_to_the_bit():
    def build():
        return nn.Sequential(nn.Conv2d(2, 4, 3, rng=0), nn.ReLU(), nn.BatchNorm2d(4),
                             nn.Flatten(), nn.Linear(36, 5, rng=1), nn.ReLU(), nn.BatchNorm1d(5))
    x = _randn(np.random.default_rng(0), 3, 2, 5, 5)
    for fused, apart in zip(*_fused_and_apart(build, (1, 5), (2, 6), x)):
        np.testing.assert_array_equal(fused, apart)


def test_sequential_fuses_batchnorm_then_relu_to_the_bit():
    """Also ReLU -> BatchNorm -> ReLU, which runs as one op with both flags."""
    def build():
        return nn.Sequential(nn.Conv2d(2, 4, 3, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Conv2d(4, 4, 1, rng=2), nn.ReLU(), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Flatten(), nn.Linear(36, 5, rng=1), nn.BatchNorm1d(5), nn.ReLU())
    x = _randn(np.random.default_rng(1), 3, 2, 5, 5)
    for fused, apart in zip(*_fused_and_apart(build, (2, 4, 6, 10), (1, 5, 9), x)):
        np.testing.assert_array_equal(fused, apart)


def test_sequential_fuses_batchnorm_relu_dropout_to_the_bit():
    """BN -> ReLU -> Dropout as one op draws the Dropout layer's mask (its own Generator, in
    the output's memory order: conv2d's (C, H, W, N) and a Linear's (N, C)) and gives the
    same outputs, gradients and statistics as the three layers apart."""
    def build():
        return nn.Sequential(nn.Conv2d(2, 4, 3, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Dropout(0.3, rng=5), nn.Flatten(), nn.Linear(36, 6, rng=1),
                             nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5, rng=6))
    x = _randn(np.random.default_rng(2), 7, 2, 5, 5)
    fused_run, apart_run = _fused_and_apart(build, (2, 7), (1, 6), x)
    assert np.mean(fused_run[0] == 0) > 0.3  # the dropout dropped something
    for fused, apart in zip(fused_run, apart_run):
        np.testing.assert_array_equal(fused, apart)


def test_batchnorm_dropout_is_not_fused_in_eval_mode_or_with_hooks():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.ReLU(), nn.Dropout(0.5, rng=0))
    x = Tensor(_randn(np.random.default_rng(3), 8, 3))
    model.eval()
    np.testing.assert_array_equal(model(x).data, np.maximum(model[0](x).data, 0))
    model.train()
    seen = []
    model[2].register_forward_hook(lambda m, args, out: seen.append(out))
    model(x)
    assert len(seen) == 1  # the Dropout layer ran on its own


def _eval_model_with_statistics(build, seed):
    """build() in eval mode with running statistics that are not the initial ones."""
    model = build()
    rng = np.random.default_rng(seed)
    for layer in model:
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features)
            layer.bias.data[...] = rng.standard_normal(layer.num_features)
    return model.eval()


def _assert_matches_eval_twin(torch, model, x, *outputs):
    """Each of outputs equals model's PyTorch twin in eval mode on x, within conv2d's
    float32 tolerance."""
    twin = to_torch(model).eval()
    with torch.no_grad():
        theirs = twin(torch.tensor(x)).numpy()
    for ours in outputs:
        np.testing.assert_allclose(ours, theirs, rtol=1e-5,
                                   atol=1e-5 * max(float(np.abs(theirs).max()), 1.0))


@pytest.mark.parametrize("channels", [3, 16])  # the direct kernel, then Winograd
def test_sequential_folds_conv_batchnorm_relu_for_inference(torch, monkeypatch, channels):
    """Under no_grad, eval-mode Conv2d -> BatchNorm2d (-> ReLU) runs as one convolution with
    the batch norm folded into its weight and bias: the same values as the layers apart
    (and as PyTorch's) within conv2d's float32 tolerance."""
    def build():
        return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1, rng=0), nn.BatchNorm2d(16),
                             nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1, rng=1),
                             nn.BatchNorm2d(8), nn.Conv2d(8, 16, 3, padding=1, rng=2),
                             nn.ReLU(), nn.BatchNorm2d(16), nn.MaxPool2d(2),
                             nn.Conv2d(16, 4, 3, padding=1, rng=3), nn.ReLU(),
                             nn.BatchNorm2d(4))
    model = _eval_model_with_statistics(build, 4)
    folds, afters = [], []
    original = nn.BatchNorm2d.fold_into
    monkeypatch.setattr(nn.BatchNorm2d, "fold_into",
                        lambda bn, layer: folds.append(1) or original(bn, layer))
    scale_shift = nn.BatchNorm2d.eval_scale_shift
    monkeypatch.setattr(nn.BatchNorm2d, "eval_scale_shift",
                        lambda bn: afters.append(1) or scale_shift(bn))
    x = _randn(np.random.default_rng(5), 4, channels, 8, 8)
    with no_grad():
        folded = model(Tensor(x)).data
    # two batch norms folded into the conv before them, two as a scale and shift after a
    # ReLU (the last conv, on a 4x4 map with 16 channels, through Winograd)
    assert len(folds) == 2 and len(afters) == 4
    apart = model(Tensor(x)).data  # a graph is recorded: each layer on its own
    assert len(folds) == 2
    _assert_matches_eval_twin(torch, model, x, folded, apart)


def test_sequential_runs_a_following_2x2_max_pool_inside_the_conv_for_inference(torch,
                                                                                monkeypatch):
    """Conv2d -> [BatchNorm2d] -> ReLU -> [BatchNorm2d] -> MaxPool2d(2) runs as one
    convolution under no_grad (the pool inside Winograd's kernel where it applies); a hooked
    pool, another window or a recorded graph runs the MaxPool2d layer itself."""
    def build(pool=2):
        return nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, rng=0), nn.ReLU(),
                             nn.BatchNorm2d(16), nn.MaxPool2d(2), nn.Dropout(0.3),
                             nn.Conv2d(16, 8, 3, padding=1, rng=1), nn.BatchNorm2d(8),
                             nn.ReLU(), nn.MaxPool2d(pool),
                             nn.Conv2d(8, 4, 3, padding=1, rng=2), nn.ReLU(), nn.MaxPool2d(2))
    model = _eval_model_with_statistics(build, 8)
    pools = []
    original = nn.MaxPool2d.forward
    monkeypatch.setattr(nn.MaxPool2d, "forward", lambda m, x: pools.append(1) or original(m, x))
    x = _randn(np.random.default_rng(9), 3, 16, 12, 12)
    with no_grad():
        fused = model(Tensor(x)).data
    assert not pools
    apart = model(Tensor(x)).data  # a graph is recorded: each layer on its own
    assert len(pools) == 3
    _assert_matches_eval_twin(torch, model, x, fused, apart)
    pools.clear()
    model[3].register_forward_hook(lambda *args: None)
    other = _eval_model_with_statistics(lambda: build(pool=3), 8)
    with no_grad():
        model(Tensor(x))
        other(Tensor(x))
    assert len(pools) == 2  # the hooked pool, and the 3x3 one


def test_conv2d_affine_is_for_inference_and_checks_its_shapes():
    rng = np.random.default_rng(9)
    x, w = _randn(rng, 2, 16, 6, 6), _randn(rng, 4, 16, 3, 3)
    scale, shift = _randn(rng, 4), _randn(rng, 4)
    for padding in (1, 0):  # Winograd, on 6x6 and 4x4 outputs
        with no_grad():
            ours = F.conv2d(x, w, padding=padding, relu=True, affine=(scale, shift)).data
            plain = F.conv2d(x, w, padding=padding).data
        expected = np.maximum(plain, 0) * scale[:, None, None] + shift[:, None, None]
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
    with no_grad():  # 3 input channels: the direct kernel, then a pass of scale and shift
        ours = F.conv2d(x[:, :3], w[:, :3], padding=1, affine=(scale, shift)).data
        plain = F.conv2d(x[:, :3], w[:, :3], padding=1).data
    np.testing.assert_allclose(ours, plain * scale[:, None, None] + shift[:, None, None],
                               rtol=1e-6, atol=1e-6)
    # the GEMM paths: im2col (stride 2), and row GEMMs (C*O over DIRECT_MAX_CO, 5x5 output)
    wide, wide_w = _randn(rng, 2, 80, 5, 5), _randn(rng, 60, 80, 3, 3)
    for xs, ws, options in ((x, w, {"stride": 2, "padding": 1}), (wide, wide_w, {"padding": 1})):
        o = ws.shape[0]
        s, t = _randn(rng, o), _randn(rng, o)
        with no_grad():
            plain = F.conv2d(xs, ws, **options).data
            rectified = F.conv2d(xs, ws, relu=True, **options).data
            ours = F.conv2d(xs, ws, relu=True, affine=(s, t), **options).data
        np.testing.assert_array_equal(rectified, np.maximum(plain, 0))
        expected = np.maximum(plain, 0) * s[:, None, None] + t[:, None, None]
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="affine= is for inference"):
        F.conv2d(Tensor(x, requires_grad=True), w, affine=(scale, shift))
    conv, bn = nn.Conv2d(16, 4, 3, rng=0), nn.BatchNorm2d(4).eval()
    for fusion in ({"batch_norm": bn}, {"batch_norm_after": bn, "relu": True}):
        with pytest.raises(ValueError, match="are inference fusions"):
            conv(Tensor(x), **fusion)
    with no_grad(), pytest.raises(ValueError, match=r"each of shape \(4,\)"):
        F.conv2d(x, w, affine=(scale[:3], shift))


def test_batchnorm_is_not_folded_when_training_hooked_or_recording():
    def build():
        return nn.Sequential(nn.Conv2d(16, 8, 3, padding=1, rng=0), nn.BatchNorm2d(8), nn.ReLU())
    x = Tensor(_randn(np.random.default_rng(6), 2, 16, 6, 6))
    model = _eval_model_with_statistics(build, 7)
    y = model(x)  # eval mode with a graph: the batch norm's parameters get gradients
    y.backward(np.ones(y.shape, np.float32))
    assert model[1].weight.grad is not None and model[1].bias.grad is not None
    seen = []
    model[1].register_forward_hook(lambda m, args, out: seen.append(out))
    with no_grad():
        model(x)
    assert len(seen) == 1  # hooked: the BatchNorm2d ran on its own
    model = build()  # training mode: batch statistics, nothing to fold
    with no_grad():
        trained = model(x).data
        apart = F.relu(model[1](model[0](x))).data
    np.testing.assert_array_equal(trained, apart)


def test_conv2d_relu_option_matches_relu_of_conv2d_with_and_without_gradients():
    rng = np.random.default_rng(8)
    x = Tensor(_randn(rng, 3, 16, 6, 6), requires_grad=True)
    w = Tensor(_randn(rng, 5, 16, 3, 3), requires_grad=True)
    b = Tensor(_randn(rng, 5))
    expected = F.relu(F.conv2d(x, w, b, padding=1))
    fused = F.conv2d(x, w, b, padding=1, relu=True)
    np.testing.assert_array_equal(fused.data, expected.data)
    fused.sum().backward()
    dx, dw = x.grad.copy(), w.grad.copy()
    x.grad = w.grad = None
    expected.sum().backward()
    np.testing.assert_array_equal(dx, x.grad)
    np.testing.assert_array_equal(dw, w.grad)
    with no_grad():
        for padding, size in ((1, 6), (0, 6), (1, 5)):  # Winograd, Winograd, direct (odd)
            ours = F.conv2d(x.data[..., :size, :size], w, b, padding=padding, relu=True).data
            plain = F.conv2d(x.data[..., :size, :size], w, b, padding=padding).data
            np.testing.assert_array_equal(ours, np.maximum(plain, 0))


def test_fused_batchnorm_error_names_the_batchnorm_layer():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm2d\)"):
        model(Tensor(np.ones((2, 4, 3, 3), np.float32)))


# ---- forward hooks ---------------------------------------------------------------------------
def test_hooks_run_in_order_around_forward_and_on_containers():
    calls = []
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU())
    for name, module in (("model", model), ("linear", model[0]), ("relu", model[1])):
        module.register_forward_pre_hook(lambda m, args, name=name: calls.append(("pre", name)))
        module.register_forward_hook(lambda m, args, out, name=name: calls.append(("post", name)))
    model[0].register_forward_hook(lambda m, args, out: calls.append(("post 2", "linear")))
    model(np.ones((2, 3), np.float32))
    assert calls == [("pre", "model"), ("pre", "linear"), ("post", "linear"),
                     ("post 2", "linear"), ("pre", "relu"), ("post", "relu"), ("post", "model")]


def test_hooks_see_the_module_arguments_and_output_and_may_replace_them():
    layer = nn.Linear(3, 2, rng=0)
    seen = []
    layer.register_forward_hook(lambda m, args, out: seen.append((m, args, out)))
    x = Tensor(np.ones((1, 3), np.float32))
    y = layer(x)
    assert seen[0][0] is layer and seen[0][1][0] is x and seen[0][2] is y
    with layer.register_forward_pre_hook(lambda m, args: Tensor(2 * args[0].data)):
        doubled = layer(x)
    np.testing.assert_allclose(doubled.data - layer.bias.data, 2 * (y.data - layer.bias.data),
                               rtol=1e-6)
    with layer.register_forward_hook(lambda m, args, out: F.mul(out, 0.0)):
        np.testing.assert_array_equal(layer(x).data, np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(layer(x).data, y.data)  # both removed on leaving the blocks


def test_removed_hooks_no_longer_run():
    layer = nn.ReLU()
    calls = []
    first = layer.register_forward_hook(lambda m, args, out: calls.append(1))
    second = layer.register_forward_pre_hook(lambda m, args: calls.append(2))
    layer(np.ones(2, np.float32))
    assert calls == [2, 1] and layer.has_hooks()
    first.remove()
    first.remove()  # a second remove() is harmless
    layer(np.ones(2, np.float32))
    assert calls == [2, 1, 2]
    second.remove()
    layer(np.ones(2, np.float32))
    assert calls == [2, 1, 2] and not layer.has_hooks()
    with pytest.raises(TypeError, match="callable"):
        layer.register_forward_hook("not a function")


def test_sequential_keeps_hooked_layers_apart_and_the_result_equal():
    """A hook on the ReLU or the BatchNorm of a fusable pair: both layers run on their own,
    the hooks see each layer's own output, and outputs and gradients equal the fused run's."""
    def build():
        return nn.Sequential(nn.Conv2d(2, 4, 3, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Flatten(), nn.Linear(36, 3, rng=1))
    x = _randn(np.random.default_rng(2), 3, 2, 5, 5)
    fused = build()
    y_fused = fused(Tensor(x.copy()))
    y_fused.backward(np.ones(y_fused.shape, np.float32))
    for hooked in (1, 2):
        model = build()
        seen = []
        model[hooked].register_forward_hook(lambda m, args, out: seen.append(out.data.copy()))
        y = model(Tensor(x.copy()))
        y.backward(np.ones(y.shape, np.float32))
        assert len(seen) == 1
        if hooked == 1:
            assert (seen[0] < 0).any()  # the BatchNorm's own output, before the ReLU
        np.testing.assert_array_equal(y.data, y_fused.data)
        for p, q in zip(model.parameters(), fused.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)
        np.testing.assert_array_equal(model[1].running_var, fused[1].running_var)


# ---- airbench's pieces: Scale, and BatchNorm with a frozen scale ------------------------------
def test_scale_matches_a_torch_multiply_and_refuses_bad_factors(torch):
    class TorchScale(torch.nn.Module):
        def forward(self, x):
            return x * (1 / 9)

    x = _randn(np.random.default_rng(0), 3, 10)
    assert_module_matches_torch(torch, nn.Scale(1 / 9), TorchScale(), x, **TOLERANCE)
    assert repr(nn.Scale(0.5)) == "Scale(factor=0.5)"
    for bad in (float("nan"), "2", True):
        with pytest.raises(ValueError, match="Scale: factor must be a finite number"):
            nn.Scale(bad)


def test_batchnorm_with_a_frozen_scale_matches_torch(torch):
    """airbench's BatchNorm: weight fixed at 1 (not trained), bias trained, eps 1e-12,
    torch momentum 0.4; running statistics tracked over several steps."""
    ours = nn.BatchNorm2d(4, eps=1e-12, momentum=0.4)
    theirs = torch.nn.BatchNorm2d(4, eps=1e-12, momentum=0.4)
    ours.weight.requires_grad = False
    theirs.weight.requires_grad_(False)
    with torch.no_grad():
        theirs.bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(torch_state(theirs))
    rng = np.random.default_rng(3)
    for step in range(4):
        x = 1 + 2 * _randn(rng, 8, 4, 5, 5)
        xo, xt = Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        g = _randn(rng, *yo.shape)
        ours.zero_grad(), theirs.zero_grad()
        yo.backward(g), yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-4, atol=1e-5)
        assert ours.weight.grad is None and theirs.weight.grad is None
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-5, atol=1e-7)


def test_sequential_runs_relu_then_maxpool_as_maxpool_then_relu_to_the_bit():
    """The swap changes nothing but the size of the ReLU's map: outputs, input and parameter
    gradients equal those of the layers in their own order (kept apart by a hook), with
    all-negative windows, padded windows and ties among them."""
    def build():
        return nn.Sequential(nn.Conv2d(2, 4, 3, rng=0), nn.ReLU(), nn.MaxPool2d(3, padding=1),
                             nn.Conv2d(4, 3, 1, rng=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(3, 5, rng=1))
    x = _randn(np.random.default_rng(5), 6, 2, 6, 6) - 0.5
    x[0, :, :3, :3] = -1.0  # ties and an all-negative corner
    runs, relu_shapes = [], []
    for apart in (False, True):
        model = build()
        if apart:
            for i in (1, 4):
                model[i].register_forward_hook(lambda module, args, output: None)
        shapes = []
        original = F.relu
        try:
            F.relu = lambda t: shapes.append(t.shape) or original(t)
            xt = Tensor(x.copy(), requires_grad=True)
            y = model(xt)
        finally:
            F.relu = original
        y.backward(np.ones(y.shape, np.float32))
        runs.append([y.data, xt.grad] + [p.grad for p in model.parameters()])
        relu_shapes.append(shapes)
    assert relu_shapes == [[(6, 4, 2, 2), (6, 3, 1, 1)], [(6, 4, 4, 4), (6, 3, 2, 2)]]
    assert np.mean(runs[0][1] == 0) > 0.3  # gradients were masked
    for fused, apart in zip(*runs):
        np.testing.assert_array_equal(fused, apart)
