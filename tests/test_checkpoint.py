"""Checkpoints: safetensors weights in PyTorch's names and layouts, exact resume state, errors."""
import json
import os

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import minivgg.checkpoint as checkpoint
from minivgg import functional as F
from minivgg import nn, optim
from minivgg.checkpoint import (CheckpointError, flatten_state, load_model, load_resume,
                                load_weights, save_resume, save_weights, unflatten_state)
from minivgg.models import build

MNIST_META = {"input_shape": [1, 28, 28], "num_classes": 10}


def perturbed(model, seed=0):
    """Give every BatchNorm non-trivial affine weights and running stats (and a step count),
    so that comparisons exercise every tensor of the state_dict."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(7 + rng.integers(100), dtype=np.int64)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
        else:
            state[key] = (value + 0.1 * rng.standard_normal(value.shape)).astype(value.dtype)
    model.load_state_dict(state)
    return model


def assert_same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


def rewrite_header(path, change):
    """Re-save `path` with its minivgg JSON header passed through change(header) -> header."""
    with safe_open(path, framework="np") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = json.loads(handle.metadata()["minivgg"])
    text = change(header)
    save_file(tensors, path, metadata={"minivgg": text if isinstance(text, str) else json.dumps(text)})


@pytest.fixture(scope="module")
def mnist_model():
    return perturbed(build("mnist_5k", in_channels=1, image_size=28))


@pytest.fixture
def weights_file(tmp_path, mnist_model):
    path = tmp_path / "mnist_5k.safetensors"
    save_weights(path, mnist_model, MNIST_META)
    return path


# --- flatten_state / unflatten_state ---------------------------------------------------------

def test_flatten_round_trip_keeps_structure_types_and_dtypes():
    rng_state = np.random.default_rng(123).bit_generator.state
    tree = {
        "state": {0: {"momentum_buffer": np.arange(6, dtype=np.float32).reshape(2, 3), "step": 3},
                  7: {"count": np.array(5, dtype=np.int64)}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 7], "nesterov": True}],
        "scalar": np.float32(2.5),
        "scalar64": np.float64(0.1),
        "tag_like": {"__array__": "not a reference"},
        "nothing": None,
        "text": "ok",
        "third": 1 / 3,
        "big": 2 ** 100 + 1,
        "rng": rng_state,
        "empty": {},
    }
    arrays, json_tree = flatten_state(tree, prefix="optimizer")
    assert sorted(arrays) == ["optimizer.scalar", "optimizer.scalar64",
                              "optimizer.state.0.momentum_buffer",
                              "optimizer.state.7.count"]
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    back = unflatten_state(arrays, json.loads(json.dumps(json_tree)))

    assert list(back) == list(tree)
    assert list(back["state"]) == [0, 7]               # int keys stay ints, in order
    buf = back["state"][0]["momentum_buffer"]
    assert buf.dtype == np.float32 and buf.shape == (2, 3) and buf.flags.writeable
    np.testing.assert_array_equal(buf, tree["state"][0]["momentum_buffer"])
    count = back["state"][7]["count"]
    assert count.dtype == np.int64 and count.shape == () and count == 5
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert isinstance(back["param_groups"][0]["betas"], tuple)
    assert type(back["scalar"]) is np.float32 and back["scalar"] == np.float32(2.5)
    assert type(back["scalar64"]) is np.float64 and back["scalar64"] == 0.1
    assert back["tag_like"] == {"__array__": "not a reference"}
    assert back["third"] == 1 / 3 and back["big"] == 2 ** 100 + 1
    assert back["rng"] == rng_state and back["nothing"] is None and back["empty"] == {}
    assert back["state"][0]["step"] == 3 and back["param_groups"][0]["nesterov"] is True


def test_unflatten_returns_copies():
    arrays, json_tree = flatten_state({"w": np.ones(3, np.float32)}, prefix="ema")
    back = unflatten_state(arrays, json_tree)
    back["w"] += 1
    np.testing.assert_array_equal(arrays["ema.w"], np.ones(3, np.float32))


@pytest.mark.parametrize("tree, message", [
    ({"rng": np.random.default_rng(0)}, "rng.bit_generator.state"),
    ({(1, 2): 3}, "dict keys must be str or int"),
    ({"a.b": np.zeros(1), "a": {"b": np.zeros(1)}}, "collides"),
    ({"s": np.array(["text"])}, "dtype"),
    ({"f": object()}, "cannot store object at 'x.f'"),
])
def test_flatten_rejects_what_it_cannot_store(tree, message):
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.").replace("(", r"\(")):
        flatten_state(tree, prefix="x")


def test_unflatten_reports_a_missing_tensor():
    with pytest.raises(CheckpointError, match="'model.w' that is not in the file"):
        unflatten_state({}, {"w": {"__array__": "model.w"}})


# --- weights files ---------------------------------------------------------------------------

def test_weights_round_trip_is_bit_identical(weights_file, mnist_model):
    state, meta = load_weights(weights_file)
    assert_same_state(state, mnist_model.state_dict())
    assert state["2.num_batches_tracked"].dtype == np.int64
    assert state["2.num_batches_tracked"].shape == ()
    assert meta == {"model": "mnist_5k", **MNIST_META}


def test_weights_file_tensors_are_exactly_the_state_dict(weights_file, mnist_model):
    with safe_open(weights_file, framework="np") as handle:
        assert sorted(handle.keys()) == sorted(mnist_model.state_dict())
        assert list(handle.metadata()) == ["minivgg"]


def test_metadata_round_trip(tmp_path, mnist_model):
    metadata = {
        **MNIST_META, "dataset": "mnist", "class_names": [str(i) for i in range(10)],
        "mean": [0.1307], "std": (0.3081,), "recipe": {"name": "x", "lr": 0.01, "augment": []},
        "epoch": 15, "metrics": {"test_acc": np.float64(0.9941), "test_loss": 0.0213},
    }
    save_weights(tmp_path / "m.safetensors", mnist_model, metadata)
    _, meta = load_weights(tmp_path / "m.safetensors")
    # JSON: tuples come back as lists, numpy scalars as Python numbers
    assert meta == {"model": "mnist_5k", **metadata, "std": [0.3081],
                    "metrics": {"test_acc": 0.9941, "test_loss": 0.0213}}


def test_load_model_rebuilds_the_net_and_its_logits(weights_file, mnist_model):
    model, meta = load_model(weights_file)
    assert meta["model"] == "mnist_5k" and not model.training
    assert_same_state(model.state_dict(), mnist_model.state_dict())
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    mnist_model.eval()
    np.testing.assert_array_equal(model(x).data, mnist_model(x).data)


# --- torch interop ---------------------------------------------------------------------------

def torch_mnist_5k(tnn):
    def block(cin, cout):
        return [tnn.Conv2d(cin, cout, 3, bias=False), tnn.ReLU(), tnn.BatchNorm2d(cout)]
    return tnn.Sequential(*block(1, 6), *block(6, 12), tnn.MaxPool2d(2),
                          *block(12, 12), *block(12, 12), tnn.MaxPool2d(2),
                          *block(12, 12), tnn.Conv2d(12, 10, 2, bias=False),
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten())


def torch_minivggnet(tnn):
    def block(cin, cout):
        return [tnn.Conv2d(cin, cout, 3, padding="same"), tnn.ReLU(), tnn.BatchNorm2d(cout)]
    return tnn.Sequential(*block(3, 32), *block(32, 32), tnn.MaxPool2d(2), tnn.Dropout(0.25),
                          *block(32, 64), *block(64, 64), tnn.MaxPool2d(2), tnn.Dropout(0.25),
                          tnn.Flatten(), tnn.Linear(64 * 8 * 8, 512), tnn.ReLU(),
                          tnn.BatchNorm1d(512), tnn.Dropout(0.5), tnn.Linear(512, 10))


@pytest.mark.parametrize("name, shape, torch_builder", [
    ("mnist_5k", (1, 28, 28), torch_mnist_5k),
    ("minivggnet", (3, 32, 32), torch_minivggnet),
])
def test_torch_loads_the_weights_file(torch, tmp_path, name, shape, torch_builder):
    from safetensors.torch import load_file as torch_load_file

    model = perturbed(build(name, in_channels=shape[0], image_size=shape[1]), seed=3)
    path = tmp_path / f"{name}.safetensors"
    save_weights(path, model, {"input_shape": list(shape), "num_classes": 10})

    state = torch_load_file(path)
    reference = torch_builder(torch.nn)
    reference.load_state_dict(state, strict=True)
    batches = [k for k in state if k.endswith("num_batches_tracked")]
    assert batches and all(state[k].dtype == torch.int64 and state[k].dim() == 0 for k in batches)
    assert all(state[k].dtype == torch.float32 for k in state if k not in batches)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(reference.state_dict()[key].numpy(), value, err_msg=key)

    x = np.random.default_rng(4).standard_normal((4, *shape)).astype(np.float32)
    reference.eval()
    model.eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x).data, expected, rtol=1e-4, atol=1e-5)


# --- resume files ----------------------------------------------------------------------------

def tiny_net(seed):
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(16, 3))
    model.initialize(np.random.default_rng(seed))
    model.set_rng(np.random.default_rng(seed + 1))
    return model


def make_optimizer(kind, model):
    if kind == "sgd":
        return optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                         weight_decay=1e-4)
    return optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3)


def make_scheduler(optimizer):
    # cycles SGD's momentum / Adam's beta1 too: more state that must come back exactly
    return optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=8)


def train_steps(model, optimizer, scheduler, data_rng, steps, ema):
    model.train()
    for _ in range(steps):
        x = data_rng.standard_normal((8, 8)).astype(np.float32)
        y = data_rng.integers(0, 3, size=8)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
        for key, value in model.state_dict().items():
            if value.dtype == np.float32:
                ema[key] = (0.9 * ema[key] + 0.1 * value).astype(np.float32)


def dropout_rngs(model):
    return [m.rng for m in model.modules() if m.stochastic]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, kind):
    def start():
        model = tiny_net(seed=0)
        ema = {k: v for k, v in model.state_dict().items() if v.dtype == np.float32}
        optimizer = make_optimizer(kind, model)
        return model, optimizer, make_scheduler(optimizer), np.random.default_rng(5), ema

    model, optimizer, scheduler, data_rng, ema = start()
    train_steps(model, optimizer, scheduler, data_rng, 6, ema)
    expected_state, expected_ema = model.state_dict(), ema

    model, optimizer, scheduler, data_rng, ema = start()
    train_steps(model, optimizer, scheduler, data_rng, 3, ema)
    loop_state = {"step": 3, "history": [{"loss": 1.25}], "best": None,
                  "data_rng": data_rng.bit_generator.state,
                  "dropout_rngs": [r.bit_generator.state for r in dropout_rngs(model)]}
    path = tmp_path / "resume.safetensors"
    save_resume(path, model=model, optimizer=optimizer, scheduler=scheduler, ema_state=ema,
                loop_state=loop_state, metadata={"model": "tiny", "recipe": {"optimizer": kind}})
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    del model, optimizer, scheduler, data_rng, ema

    resumed = load_resume(path)
    assert set(resumed) == {"model", "optimizer", "scheduler", "ema", "loop_state", "metadata"}
    assert resumed["scheduler"] == saved_scheduler
    assert resumed["metadata"] == {"model": "tiny", "recipe": {"optimizer": kind}}
    assert resumed["loop_state"] == loop_state
    model = tiny_net(seed=42)                      # different init: everything must come back
    model.load_state_dict(resumed["model"])
    optimizer = make_optimizer(kind, model)
    optimizer.load_state_dict(resumed["optimizer"])
    scheduler = make_scheduler(optimizer)
    scheduler.load_state_dict(resumed["scheduler"])
    assert_optimizer_state_equal(optimizer.state_dict(), saved_optimizer)
    assert scheduler.state_dict() == saved_scheduler
    data_rng = np.random.default_rng()
    data_rng.bit_generator.state = resumed["loop_state"]["data_rng"]
    for rng, state in zip(dropout_rngs(model), resumed["loop_state"]["dropout_rngs"]):
        rng.bit_generator.state = state
    ema = resumed["ema"]
    train_steps(model, optimizer, scheduler, data_rng, 3, ema)

    assert_same_state(model.state_dict(), expected_state)
    assert_same_state(ema, expected_ema)


def assert_optimizer_state_equal(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert list(a["state"]) == list(b["state"])
    for index in a["state"]:
        entry_a, entry_b = a["state"][index], b["state"][index]
        assert list(entry_a) == list(entry_b)
        for key in entry_a:
            if isinstance(entry_b[key], np.ndarray):
                assert entry_a[key].dtype == entry_b[key].dtype
                np.testing.assert_array_equal(entry_a[key], entry_b[key])
            else:
                assert entry_a[key] == entry_b[key]


def test_resume_file_names_tensors_by_namespace(tmp_path):
    model = tiny_net(seed=0)
    optimizer = make_optimizer("sgd", model)
    train_steps(model, optimizer, make_scheduler(optimizer), np.random.default_rng(0), 1, {
        k: v for k, v in model.state_dict().items() if v.dtype == np.float32})
    path = tmp_path / "resume.safetensors"
    save_resume(path, model=model, optimizer=optimizer, ema_state={"0.weight": np.zeros(2)},
                loop_state={"epoch": 1}, metadata={})
    with safe_open(path, framework="np") as handle:
        keys = set(handle.keys())
    assert "model.0.weight" in keys and "model.1.num_batches_tracked" in keys
    assert "optimizer.state.0.momentum_buffer" in keys and "ema.0.weight" in keys


def test_restored_generator_continues_the_same_stream(tmp_path):
    rng = np.random.default_rng(2024)
    rng.standard_normal(5)
    rng.integers(0, 10, size=3, dtype=np.uint32)      # leaves a cached 32-bit half
    state = rng.bit_generator.state
    save_resume(tmp_path / "r.safetensors", model={}, optimizer={}, loop_state={"rng": state},
                metadata={})
    restored = np.random.default_rng()
    restored.bit_generator.state = load_resume(tmp_path / "r.safetensors")["loop_state"]["rng"]
    np.testing.assert_array_equal(restored.integers(0, 2 ** 31, size=7, dtype=np.uint32),
                                  rng.integers(0, 2 ** 31, size=7, dtype=np.uint32))
    np.testing.assert_array_equal(restored.standard_normal(11), rng.standard_normal(11))


# --- errors ----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors' does not exist; check the path"):
        load_weights(tmp_path / "nope.safetensors")


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_resume(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a safetensors file at all",
                                     b"\xff" * 64])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.safetensors' is not a readable safetensors "
                                              "file .*truncated"):
        load_weights(path)


def test_truncated_file(weights_file):
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file.*truncated"):
        load_weights(weights_file)


def test_safetensors_file_without_minivgg_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, path)
    with pytest.raises(CheckpointError, match="plain.safetensors' is a safetensors file without "
                                              "minivgg metadata"):
        load_weights(path)


@pytest.mark.parametrize("change, message", [
    (lambda h: "{not json", "the minivgg metadata is not valid JSON"),
    (lambda h: [1, 2], "the minivgg metadata is malformed"),
    (lambda h: {**h, "format": "other"}, "the minivgg metadata is malformed"),
    (lambda h: {**h, "kind": "bananas"}, "malformed \\(kind 'bananas'"),
    (lambda h: {k: v for k, v in h.items() if k != "tensors"}, "malformed"),
    (lambda h: {**h, "tensors": h["tensors"][1:]}, "do not match the list in its metadata"),
])
def test_damaged_metadata(weights_file, change, message):
    rewrite_header(weights_file, change)
    with pytest.raises(CheckpointError, match=message):
        load_weights(weights_file)


def test_unknown_format_version(weights_file):
    rewrite_header(weights_file, lambda h: {**h, "format_version": 99})
    with pytest.raises(CheckpointError, match="has checkpoint format version 99, but this minivgg "
                                              "reads version 1"):
        load_weights(weights_file)


def test_weights_file_where_resume_is_expected(weights_file):
    with pytest.raises(CheckpointError, match="is a weights checkpoint, not a resume checkpoint; "
                                              "it holds trained weights only"):
        load_resume(weights_file)


def test_resume_file_where_weights_are_expected(tmp_path):
    path = tmp_path / "resume.safetensors"
    save_resume(path, model={}, optimizer={}, loop_state={}, metadata={})
    for loader in (load_weights, load_model):
        with pytest.raises(CheckpointError, match="is a resume checkpoint, not a weights "
                                                  "checkpoint; load it with .*load_resume"):
            loader(path)


def test_damaged_resume_state(tmp_path):
    path = tmp_path / "resume.safetensors"
    save_resume(path, model={"w": np.zeros(2)}, optimizer={}, loop_state={}, metadata={})
    rewrite_header(path, lambda h: {**h, "state": {**h["state"], "model": {
        "w": {"__array__": "model.gone"}}}})
    with pytest.raises(CheckpointError, match="resume.safetensors'.*'model.gone' that is not in "
                                              "the file.*damaged"):
        load_resume(path)


def test_unknown_model_name(weights_file):
    rewrite_header(weights_file, lambda h: {**h, "metadata": {**h["metadata"], "model": "resnet"}})
    with pytest.raises(CheckpointError, match="mnist_5k.safetensors': unknown model 'resnet'; "
                                              "valid models: .*mnist_5k"):
        load_model(weights_file)


def test_state_dict_mismatch_passes_the_message_through(weights_file):
    rewrite_header(weights_file, lambda h: {**h, "metadata": {**h["metadata"], "num_classes": 7}})
    with pytest.raises(CheckpointError, match="(?s)mnist_5k.safetensors': Error\\(s\\) in loading "
                                              "state_dict.*size mismatch for 17.weight"):
        load_model(weights_file)


@pytest.mark.parametrize("metadata, message", [
    ({"num_classes": 10}, r"lacks \['input_shape'\]"),
    ({"input_shape": [1, 28], "num_classes": 10}, "'input_shape' must be \\[C, H, W\\]"),
    ({"input_shape": [1, 28, 28], "num_classes": 0}, "'num_classes' must be a positive int"),
    ({**MNIST_META, "class_names": ["a", "b"]}, "'class_names' must be a list of num_classes=10"),
    ({**MNIST_META, "model": "lenet5"}, "metadata says model 'lenet5' but the model is a "
                                        "'mnist_5k'"),
    ({**MNIST_META, "when": object()}, "metadata value at 'metadata.when' is a object"),
    ({**MNIST_META, 3: "x"}, "metadata key 3 at 'metadata' is not a string"),
])
def test_save_weights_rejects_bad_metadata_and_writes_nothing(tmp_path, mnist_model,
                                                               metadata, message):
    with pytest.raises(CheckpointError, match=message):
        save_weights(tmp_path / "w.safetensors", mnist_model, metadata)
    assert os.listdir(tmp_path) == []


def test_failed_save_leaves_the_previous_file_intact(weights_file, mnist_model, monkeypatch):
    before = weights_file.read_bytes()
    with pytest.raises(CheckpointError):
        save_weights(weights_file, mnist_model, {**MNIST_META, "bad": {1, 2}})

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_weights(weights_file, mnist_model, MNIST_META)
    with pytest.raises(OSError, match="disk full"):
        save_resume(weights_file, model=mnist_model, optimizer={}, loop_state={}, metadata={})
    assert weights_file.read_bytes() == before
    assert os.listdir(weights_file.parent) == [weights_file.name]      # no temporary left over
    state, _ = load_weights(weights_file)
    assert_same_state(state, mnist_model.state_dict())


def test_load_model_passes_model_options_to_the_builder(tmp_path):
    model = build("mnist_8k_a", in_channels=1, image_size=28, dropout=0.2)
    path = tmp_path / "a.safetensors"
    save_weights(path, model, {**MNIST_META, "model_options": {"dropout": 0.2}})
    loaded, _ = load_model(path)
    assert [m.p for m in loaded.modules() if isinstance(m, nn.Dropout)] == [0.2]


def test_load_model_reports_metadata_the_builder_rejects(weights_file):
    rewrite_header(weights_file, lambda h: {**h, "metadata": {**h["metadata"],
                                                              "input_shape": [1, 32, 32]}})
    with pytest.raises(CheckpointError, match="mnist_5k.safetensors': cannot build 'mnist_5k' "
                                              "from the recorded metadata: .*28x28"):
        load_model(weights_file)
