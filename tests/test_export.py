"""ONNX export: onnx.checker passes and onnxruntime's logits equal minivgg's."""
import json
import sys

import numpy as np
import pytest

from minivgg import checkpoint, nn
from minivgg.autograd import Tensor, no_grad
from minivgg.cli import main
from minivgg.data import get_dataset_info
from minivgg.models import MODELS, build

from every_layer import every_layer_model

onnx = pytest.importorskip("onnx", reason="pip install 'minivgg[onnx]' for the export tests")
ort = pytest.importorskip("onnxruntime", reason="pip install 'minivgg[onnx]' for the export tests")

from minivgg.export import ExportError, INSTALL_HINT, export_checkpoint, to_onnx  # noqa: E402


def _trained_looking(model, seed=0):
    """Running statistics and affine parameters away from their initial 0/1, so that a wrong
    BatchNorm export shows in the logits."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if getattr(module, "running_mean", None) is not None:
            module.running_mean[...] = rng.normal(0, 0.5, module.running_mean.shape)
            module.running_var[...] = rng.uniform(0.3, 2.0, module.running_var.shape)
        for name in ("weight", "bias"):
            param = module._parameters.get(name)
            if param is not None and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
                param.data[...] = rng.normal(1.0 if name == "weight" else 0.0, 0.3, param.shape)
    return model.eval()


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _assert_matches(model, proto, input_shape, mean, std, batches=(1, 37), seed=1):
    onnx.checker.check_model(proto, full_check=True)
    session = _session(proto)
    rng = np.random.default_rng(seed)
    for n in batches:
        x = rng.random((n, *input_shape), dtype=np.float32)
        m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        with no_grad():
            expected = model(Tensor((x - m) / s)).data
        (got,) = session.run(["logits"], {"image": x})
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6,
                                   err_msg=f"onnxruntime disagrees with minivgg at batch {n}")


@pytest.mark.parametrize("name", list(MODELS))
def test_every_zoo_model_matches_in_onnxruntime(name):
    info = get_dataset_info(MODELS[name].default_dataset)
    c, h, _ = info.shape
    model = _trained_looking(build(name, in_channels=c, num_classes=len(info.classes), image_size=h))
    mean, std = [0.45] * c, [0.22] * c
    proto = to_onnx(model, (c, h, h), mean=mean, std=std, class_names=info.classes)
    _assert_matches(model, proto, (c, h, h), mean, std)
    assert not any(node.op_type in ("Dropout", "BatchNormalization") for node in proto.graph.node)


@pytest.mark.parametrize("name, shape, classes", [
    ("vgg_v1", (3, 32, 32), 5), ("lenet5", (3, 32, 32), 5), ("minivggnet", (3, 32, 32), 5),
    ("mnist_5k", (1, 28, 28), 3), ("mnist_20k", (1, 28, 28), 3), ("vgg_v2", (3, 40, 40), 7),
])
def test_models_built_for_other_shapes_and_class_counts(name, shape, classes):
    """What a model trained on a user's image folder is: a zoo net for its own sizes."""
    model = _trained_looking(build(name, in_channels=shape[0], num_classes=classes, image_size=shape[1]))
    mean, std = [0.3, 0.5, 0.7][:shape[0]], [0.2, 0.25, 0.3][:shape[0]]
    proto = to_onnx(model, shape, mean=mean, std=std)
    _assert_matches(model, proto, shape, mean, std)


def test_every_layer_type_and_option():
    """Each layer of minivgg.nn with the options a zoo model does not use."""
    model = every_layer_model()
    _trained_looking(model)
    proto = to_onnx(model, (3, 11, 11), mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4])
    _assert_matches(model, proto, (3, 11, 11), [0.5, 0.4, 0.3], [0.2, 0.3, 0.4], batches=(1, 5, 37))
    assert "Slice" in {node.op_type for node in proto.graph.node}


def test_even_adaptive_pool_and_no_normalisation_in_the_graph():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    proto = to_onnx(model, (1, 8, 8), mean=[0.13], std=[0.3], normalize=False)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["mean"]) == pytest.approx([0.13]) and "not in the graph" in props["normalization"]
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    with no_grad():
        expected = model(Tensor(x)).data
    np.testing.assert_allclose(_session(proto).run(None, {"image": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_batch_dimension_is_free_and_metadata_holds_the_classes():
    model = build("mnist_5k", num_classes=3)
    proto = to_onnx(model, (1, 28, 28), mean=[0.1307], std=[0.3081], class_names=["cat", "dog", "é"],
                    metadata={"dataset": "pets"})
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"]) == ["cat", "dog", "é"]
    assert props["dataset"] == "pets" and json.loads(props["input_shape"]) == [1, 28, 28]


def test_wrong_class_names_and_unknown_layers_are_refused():
    with pytest.raises(ExportError, match="2 class names for a model with 3 outputs"):
        to_onnx(build("mnist_5k", num_classes=3), (1, 28, 28), class_names=["a", "b"])

    class Odd(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ExportError, match="layer 1: cannot export a Odd"):
        to_onnx(nn.Sequential(nn.Flatten(), Odd(), nn.Linear(4, 2)), (1, 2, 2))
    with pytest.raises(ExportError, match=r"must end in \(N, num_classes\)"):
        to_onnx(nn.Sequential(nn.Conv2d(1, 2, 1)), (1, 2, 2))


def test_missing_onnx_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'minivgg\[onnx\]'"):
        to_onnx(build("mnist_5k"), (1, 28, 28))
    weights = tmp_path / "m.safetensors"
    checkpoint.save_weights(weights, build("mnist_5k"), {"input_shape": [1, 28, 28], "num_classes": 10})
    assert main(["export", str(weights)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"minivgg export: error: {INSTALL_HINT}"
    assert not (tmp_path / "m.onnx").exists()


def _save(tmp_path, name="mnist_5k", shape=(1, 28, 28), classes=("zero", "one", "two")):
    model = _trained_looking(build(name, in_channels=shape[0], num_classes=len(classes),
                                   image_size=shape[1]))
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save_weights(run / "model.safetensors", model, {
        "input_shape": list(shape), "num_classes": len(classes), "class_names": list(classes),
        "mean": [0.2] * shape[0], "std": [0.3] * shape[0], "dataset": "my-folder"})
    return model, run


def test_cli_exports_a_run_and_the_file_matches(tmp_path, capsys):
    model, run = _save(tmp_path)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    proto = onnx.load(run / "model.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["class_names"]) == ["zero", "one", "two"]
    assert props["dataset"] == "my-folder" and props["model"] == "mnist_5k"
    assert props["test_time_augmentation"] == "none"
    _assert_matches(model, proto, (1, 28, 28), [0.2], [0.3])

    out = tmp_path / "elsewhere.onnx"
    assert main(["export", str(run / "model.safetensors"), "--out", str(out), "--no-normalize"]) == 0
    assert "not in the graph" in {p.key: p.value for p in onnx.load(out).metadata_props}["normalization"]


def test_cli_errors_are_one_line_and_keep_existing_files(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "no model found" in capsys.readouterr().err
    _, run = _save(tmp_path)
    assert main(["export", str(run), "--out", str(tmp_path / "no-such-dir" / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run), "--format", "tflite"])
    assert exit_info.value.code == 2


def test_export_checkpoint_writes_atomically(tmp_path, monkeypatch):
    _, run = _save(tmp_path)
    out = run / "model.onnx"
    out.write_bytes(b"old")
    import minivgg.export as export

    def broken(*args, **kwargs):
        raise ExportError("boom")

    monkeypatch.setattr(export, "to_onnx", broken)
    with pytest.raises(ExportError):
        export_checkpoint(run)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in run.iterdir()) == ["model.onnx", "model.safetensors"]


def test_a_model_trained_on_an_image_folder_matches_and_keeps_its_class_names(tmp_path, monkeypatch):
    """The exported graph of a run trained with `train --data`: colour 36x36 images, three
    classes named by their folders, scored on the folder's own test images."""
    from PIL import Image

    from minivgg.data import load_dataset
    from minivgg.experiment import run_recipe
    from minivgg.models import get_recipe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    folder = tmp_path / "colours"
    for name, colour in (("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200))):
        (folder / name).mkdir(parents=True)
        for i in range(25):
            img = rng.integers(0, 80, (36, 36, 3)).astype(np.uint8)
            top, left = rng.integers(2, 14, 2)
            img[top:top + 20, left:left + 20] = colour
            Image.fromarray(img).save(folder / name / f"{i}.png")
    recipe = get_recipe("mnist_20k").override(model="lenet5", dataset=str(folder), iters=15,
                                              batch_size=16, augment=(), eval_every=15)
    result = run_recipe(recipe, out=tmp_path / "runs", echo=False, progress=False)
    path = export_checkpoint(result.run_dir)
    model, meta = checkpoint.load_model(result.run_dir / "model.safetensors")
    assert meta["class_names"] == ["blue", "green", "red"] and meta["input_shape"] == [3, 36, 36]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    stored = session.get_modelmeta().custom_metadata_map
    assert json.loads(stored["class_names"]) == ["blue", "green", "red"]
    images, _ = load_dataset(str(folder), "test")
    mean = np.asarray(meta["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], np.float32).reshape(1, -1, 1, 1)
    model.eval()
    for n in (1, min(37, len(images))):
        x = images[:n].astype(np.float32) / 255
        with no_grad():
            expected = model(Tensor((x - mean) / std)).data
        (got,) = session.run(["logits"], {"image": x})
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)
