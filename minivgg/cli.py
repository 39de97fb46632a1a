"""The `minivgg` command line: a thin layer that parses, calls the library and prints."""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# ---- argument types --------------------------------------------------------------------------
def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _nonneg_int(text: str) -> int:
    return _whole_number(text, 0)


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be positive, got 0")
    return value


def _shape(text: str) -> tuple:
    try:
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, got {text!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive sizes C,H,W, got {text!r}")
    return dims


# ---- commands --------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .experiment import run_recipe
    from .models import DEFAULT_RECIPE, RECIPES, get_model_spec, get_recipe

    if args.resume:
        if any(v is not None for v in (args.recipe, args.recipe_file, args.model, args.dataset, args.data,
                                       args.epochs, args.iters,
                                       args.batch_size, args.lr, args.seed)):
            raise CLIError("--resume continues a run with its saved recipe; drop the other training "
                           "flags (start a new run to change them)")
        result = run_recipe(None, data_dir=args.data_dir, resume=args.resume, download=args.download,
                            progress=args.progress)
        return _report_run(result)
    if args.data is not None:
        if args.dataset is not None:
            raise CLIError("give --dataset (a registered dataset) or --data (a folder of images), "
                           "not both")
        from pathlib import Path
        from .data.folders import open_image_folder
        open_image_folder(args.data)  # a folder that cannot be used: say why now
        args.dataset = str(Path(args.data).expanduser().resolve())
    elif args.image_size is not None:
        raise CLIError("--image-size applies to image folders (--data DIR) only")
    if args.recipe_file is not None:
        if args.recipe is not None:
            raise CLIError("give --recipe or --recipe-file, not both")
        from .sweep import load_recipe_file
        recipe = load_recipe_file(args.recipe_file)
    elif args.recipe is None and args.model is not None:
        get_model_spec(args.model)  # unknown model: list the valid ones
        matching = [r for r in RECIPES.values() if r.model == args.model]
        recipe = matching[0] if matching else get_recipe(DEFAULT_RECIPE)
    else:
        recipe = get_recipe(args.recipe or DEFAULT_RECIPE)
    changes = dict(model=args.model, dataset=args.dataset, epochs=args.epochs, iters=args.iters,
                   batch_size=args.batch_size, lr=args.lr, seed=args.seed, optimizer=args.optimizer,
                   momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                   max_lr=args.max_lr, label_smoothing=args.label_smoothing, patience=args.patience,
                   val_fraction=args.val_fraction, ema=args.ema, grad_clip=args.grad_clip,
                   log_every=args.log_every, augment_epochs=args.augment_epochs,
                   image_size=args.image_size)
    if args.model is not None:
        get_model_spec(args.model)
    if args.dataset is not None and args.data is None:
        from .data import get_dataset_info
        get_dataset_info(args.dataset)
    if args.no_augment:
        changes["augment"] = ()
    if args.tta:
        changes["tta_flip"] = True
    if args.tta_shift is not None:
        changes["tta_shift"] = args.tta_shift
    if changes.get("max_lr") is None and args.lr is not None and recipe.max_lr is not None:
        changes["max_lr"] = args.lr  # --lr sets the peak of a one-cycle schedule too
    recipe = recipe.override(**changes)
    result = run_recipe(recipe, data_dir=args.data_dir, out=args.out, download=args.download,
                        progress=args.progress)
    return _report_run(result)


def _report_run(result) -> int:
    if result.test_acc is not None:
        print(f"test accuracy: {result.test_acc:.4f}")
    print(f"run directory: {result.run_dir}")
    print(f"plots: {result.run_dir / 'curves.png'}, {result.run_dir / 'confusion.png'}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import run_sweep

    if args.ray is None and args.cpus_per_trial is not None:
        raise CLIError("--cpus-per-trial is for --ray; on one machine give --workers")
    if args.ray is not None and args.workers is not None:
        raise CLIError("--workers is for one machine; on Ray give --cpus-per-trial")
    result = run_sweep(args.spec, out=args.out, workers=args.workers or 1, ray_address=args.ray,
                       data_dir=args.data_dir, cpus_per_trial=args.cpus_per_trial or 1)
    return 0 if result["best"] is not None else 1


def cmd_eval(args) -> int:
    from pathlib import Path

    from .inference import evaluate_checkpoint, locate_weights, plot_misclassified
    from .metrics import format_scores
    from .plots import plot_confusion_matrix
    from .tta import describe_tta

    r = evaluate_checkpoint(args.model_path, dataset=args.dataset, split=args.split,
                            data_dir=args.data_dir, download=args.download, **_tta_choice(args))
    errors_png = args.errors_png or str(locate_weights(args.model_path).parent /
                                        f"misclassified-{args.split}.png")
    wrote_errors = plot_misclassified(r, errors_png, count=args.errors) is not None if args.errors else False
    if args.json:
        out = {k: v for k, v in r.items() if k not in ("metadata", "confusion", "images")}
        out["confusion"] = r["confusion"].tolist()
        out["misclassified_png"] = errors_png if wrote_errors else None
        print(json.dumps(out, indent=2))
    else:
        print(f"{r['dataset']} {r['split']}: accuracy {r['accuracy']:.4f}  loss {r['loss']:.4f}  "
              f"({r['count']:,} images; {describe_tta(r['tta']['flip'], r['tta']['shift'], r['tta'].get('translate', 0))})")
        width = max(len(c) for c in r["classes"])
        print("per-class accuracy:")
        for name, acc in zip(r["classes"], r["per_class_accuracy"]):
            print(f"  {name:<{width}}  {acc:.4f}")
        print("confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(r["classes"], r["confusion"]):
            print(f"  {name:<{width}}  " + " ".join(f"{v:5d}" for v in row))
        print("per-class precision, recall and F1:")
        print(format_scores(r["per_class"]))
        if wrote_errors:
            print(f"misclassified images with the highest loss: {Path(errors_png)}")
    if args.confusion_png:
        plot_confusion_matrix(r["confusion"], r["classes"], args.confusion_png)
        print(f"confusion matrix plot: {args.confusion_png}")
    return 0


def cmd_summary(args) -> int:
    from .data import get_dataset_info
    from .models import build, get_model_spec
    from .summary import summary

    spec = get_model_spec(args.model)
    if args.input_shape:
        c, h, w = args.input_shape
        if h != w:
            raise CLIError(f"zoo models take square images; got input shape {args.input_shape}")
        classes = 10
    else:
        info = get_dataset_info(args.dataset or spec.default_dataset)
        (c, h, w), classes = info.shape, len(info.classes)
    model = build(args.model, in_channels=c, num_classes=classes, image_size=h, seed=0)
    print(summary(model, (c, h, w)))
    return 0


def _tta_choice(args) -> dict:
    """eval/predict: --no-tta, --tta, --tta-shift N; what is not given comes from the recipe."""
    if args.no_tta and (args.tta or args.tta_shift is not None):
        raise CLIError("--no-tta scores the plain model; give it alone, or --tta / --tta-shift alone")
    if args.no_tta:
        return {"tta_flip": False, "tta_shift": 0}
    return {"tta_flip": args.tta, "tta_shift": args.tta_shift}


def cmd_predict(args) -> int:
    from .inference import predict_files

    results = predict_files(args.model_path, args.images, top_k=args.top_k, invert=args.invert,
                            preprocess=args.preprocess, show=args.show, **_tta_choice(args))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        top = ", ".join(f"{name} {p:.3f}" for name, p in r["top"])
        print(f"{r['file']}: {r['prediction']}  ({top})")
    if results and results[0]["mnist_style"]:
        print("(images made MNIST-style: ink boxed into 20x20 and centred on 28x28; "
              "--no-preprocess feeds them as they are)")
    if args.show:
        print(f"what the net saw: {args.show}")
    return 0


def cmd_inspect(args) -> int:
    from .inference import inspect_files

    written = inspect_files(args.model_path, args.images, args.out, target=args.target,
                            invert=args.invert, preprocess=args.preprocess)
    for path in written:
        print(path)
    return 0


def cmd_export(args) -> int:
    from .export import export_checkpoint

    try:
        out = export_checkpoint(args.model_path, out=args.out, normalize=not args.no_normalize)
    except ImportError as e:
        raise CLIError(str(e)) from None
    scale = "normalised as in training" if args.no_normalize else "pixels / 255"
    print(f"wrote {out}: input 'image' float32 (N, C, H, W), {scale}; output 'logits'")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    serve(args.model_path, host=args.host, port=args.port, top_k=args.top_k,
          preprocess=args.preprocess, max_upload=args.max_upload_mb * 1024 * 1024)
    return 0


def cmd_models(args) -> int:
    from .data import get_dataset_info
    from .models import MODELS, build

    rows = []
    for name, spec in MODELS.items():
        info = get_dataset_info(spec.default_dataset)
        c, h, _ = info.shape
        params = build(name, in_channels=c, num_classes=len(info.classes), image_size=h).num_parameters()
        rows.append((name, spec.default_dataset, f"{params:,}", spec.description))
    _print_columns(("model", "dataset", "params", "description"), rows, right=(2,))
    return 0


def cmd_recipes(args) -> int:
    from .models import DEFAULT_RECIPE, RECIPES, get_recipe

    if args.name:
        print(json.dumps(get_recipe(args.name).to_dict(), indent=2))
        return 0
    rows = []
    for name, r in RECIPES.items():
        published = f"{r.published:.4f}" if r.published else "-"
        mark = " (default)" if name == DEFAULT_RECIPE else ""
        rows.append((name, r.model, r.dataset, published, r.description + mark))
    _print_columns(("recipe", "model", "dataset", "published", "description"), rows, right=(3,))
    return 0


def _print_columns(header: tuple, rows: list, right: tuple = ()) -> None:
    """A plain-text table whose columns are as wide as their longest cell; the last column is
    left ragged, the columns numbered in `right` are right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).rjust(w) if i in right else str(cell).ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        print(" ".join(cells) + "  " + str(row[-1]))


def cmd_preview(args) -> int:
    from .data.preview import main as preview_main

    argv = ["--dataset", args.dataset, "--out", args.out]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    return preview_main(argv) or 0


def cmd_compare(args) -> int:
    from .compare import compare_runs, format_table, iterations_figure_path

    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    runs = compare_runs(args.runs, args.out, labels=labels, title=args.title)
    print(format_table(runs))
    print(f"figure: {args.out}")
    if any(run.iteration_loss and run.iteration_loss[0] for run in runs):
        print(f"iteration loss figure: {iterations_figure_path(args.out)}")
    return 0


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minivgg", description="Train, evaluate and inspect small-image CNNs written from scratch "
                                    "on NumPy (MNIST, Fashion-MNIST, CIFAR-10).")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def data_flags(p):
        p.add_argument("--data-dir", help="folder holding <dataset>/ files (default: $MINIVGG_DATA, "
                                          "else the per-user cache)")
        p.add_argument("--download", action="store_true",
                       help="download missing dataset files (needs internet)")

    def image_flags(p):
        p.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                       help="greyscale models: invert dark-on-light images (auto: by the border colour)")
        p.add_argument("--preprocess", action=argparse.BooleanOptionalAction, default=None,
                       help="make each image MNIST-style first: crop to the ink, fit it into 20x20, "
                            "centre it on 28x28 by its centre of mass (default: on for models "
                            "trained on MNIST)")

    def tta_flags(p):
        p.add_argument("--tta", action="store_true", default=None,
                       help="flip test-time augmentation (default: as the model's recipe)")
        p.add_argument("--tta-shift", type=_nonneg_int, metavar="PIXELS",
                       help="shift test-time augmentation, see train --tta-shift (default: as the "
                            "model's recipe)")
        p.add_argument("--no-tta", action="store_true", help="score the plain model, without the "
                                                             "recipe's test-time augmentation")

    from .models.recipes import DEFAULT_RECIPE
    t = sub.add_parser("train", help=f"train a recipe (default: {DEFAULT_RECIPE} on MNIST)",
                       description="Train a named recipe; every flag overrides the recipe's value. "
                                   "Writes a new run directory with logs, metrics, plots and checkpoints.")
    t.add_argument("--recipe", help="named recipe (see `minivgg recipes`)")
    t.add_argument("--recipe-file", metavar="FILE",
                   help="a recipe saved as JSON, such as a sweep's best_recipe.json")
    t.add_argument("--model", help="zoo model (see `minivgg models`); without --recipe, the model's "
                                   "first recipe is used")
    t.add_argument("--dataset", help="mnist, fashion-mnist or cifar10")
    t.add_argument("--data", metavar="DIR", help="train on a folder of images: one sub-folder per "
                                                 "class, or train/ val/ test/ each holding them")
    t.add_argument("--image-size", type=_positive_int, metavar="PIXELS",
                   help="with --data: resize images to this side (default: the model's fixed "
                        "size, else the folder's most common side)")
    t.add_argument("--epochs", type=_positive_int, help="train for this many epochs")
    t.add_argument("--iters", type=_positive_int, help="train for this many iterations (instead of epochs)")
    t.add_argument("--batch-size", type=_positive_int, help="images per training step")
    t.add_argument("--lr", type=_positive_float, help="learning rate (the peak for one-cycle schedules)")
    t.add_argument("--seed", type=int, help="seed for initialisation, shuffling, augmentation, dropout")
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    t.add_argument("--momentum", type=_nonneg_float)
    t.add_argument("--weight-decay", type=_nonneg_float)
    t.add_argument("--schedule", choices=["none", "step", "multistep", "onecycle", "cosine", "inverse_time"])
    t.add_argument("--max-lr", type=_positive_float, help="one-cycle peak learning rate")
    t.add_argument("--label-smoothing", type=_nonneg_float)
    t.add_argument("--patience", type=_positive_int, help="early stopping patience, in epochs "
                                                          "(needs a validation split)")
    t.add_argument("--val-fraction", type=_nonneg_float, help="hold out this fraction of the training set")
    t.add_argument("--ema", type=_positive_float, help="weight EMA decay, e.g. 0.999")
    t.add_argument("--grad-clip", type=_positive_float, help="clip the global gradient norm")
    t.add_argument("--log-every", type=_positive_int, help="iteration runs: log every N iterations")
    t.add_argument("--no-augment", action="store_true", help="drop the recipe's augmentation")
    t.add_argument("--augment-epochs", type=_positive_int,
                   help="augment in the first N epochs only; the rest train on the images as they are")
    t.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    t.add_argument("--tta-shift", type=_nonneg_int, metavar="PIXELS",
                   help="shift test-time augmentation: also average over the image moved this many "
                        "pixels left, right, up and down (0: off)")
    t.add_argument("--out", default="runs", help="parent folder of run directories (default: runs)")
    t.add_argument("--resume", help="a checkpoints/last.resume.safetensors file to continue")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only when stderr is a terminal)")
    data_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion matrix of a saved model")
    e.add_argument("model_path", help="a run directory or a model .safetensors file")
    e.add_argument("--dataset", help="dataset to evaluate on (default: the one it was trained on)")
    e.add_argument("--split", choices=["test", "train"], default="test")
    tta_flags(e)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--confusion-png", help="also save the confusion matrix as a PNG here")
    e.add_argument("--errors", type=_nonneg_int, default=32, metavar="N",
                   help="show the N misclassified images with the highest loss (default 32; 0: none)")
    e.add_argument("--errors-png", help="where to write them (default: misclassified-<split>.png "
                                        "beside the model file)")
    data_flags(e)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("summary", help="table of layers, output shapes and parameter counts")
    s.add_argument("model", help="zoo model name (see `minivgg models`)")
    s.add_argument("--dataset", help="size the model for this dataset (default: the model's own)")
    s.add_argument("--input-shape", type=_shape, help="C,H,W instead of a dataset, e.g. 3,32,32")
    s.set_defaults(func=cmd_summary)

    p = sub.add_parser("predict", help="classify PNG/JPEG image files with a saved model")
    p.add_argument("model_path", help="a run directory or a model .safetensors file")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=_positive_int, default=3)
    image_flags(p)
    p.add_argument("--show", metavar="PNG", help="write each image beside what the net saw to this PNG")
    tta_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    x = sub.add_parser("export", help="export a saved model to ONNX",
                       description="Write a saved model as an ONNX graph (eval mode: BatchNorm with "
                                   "its running statistics, no dropout; free batch dimension), with "
                                   "the class names, mean and std in its metadata. Needs "
                                   "pip install 'minivgg[onnx]'.")
    x.add_argument("model_path", help="a run directory or a model .safetensors file")
    x.add_argument("--format", choices=["onnx"], default="onnx", help="the only format: onnx")
    x.add_argument("--out", help="output file (default: model.onnx beside the weights)")
    x.add_argument("--no-normalize", action="store_true",
                   help="leave the mean/std normalisation out of the graph (it stays in the "
                        "metadata); by default the graph takes pixels / 255")
    x.set_defaults(func=cmd_export)

    w = sub.add_parser("serve", help="a local web page to draw on or drop images, with predictions "
                                     "and feature maps",
                       description="Serve a page where you draw a digit or drop an image and see "
                                   "the top classes, the image as the net saw it and each conv "
                                   "layer's feature maps. Listens on 127.0.0.1 unless --host says "
                                   "otherwise.")
    w.add_argument("model_path", help="a run directory or a model .safetensors file")
    w.add_argument("--port", type=_nonneg_int, default=8000, help="TCP port (default 8000; 0: any free one)")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, "
                                                       "this machine only)")
    w.add_argument("--top-k", type=_positive_int, default=5, help="classes shown (default 5)")
    w.add_argument("--preprocess", choices=["auto", "mnist", "resize"], default="auto",
                   help="mnist: crop to the ink, fit 20x20 and centre, as MNIST's digits were made; "
                        "resize: scale the whole image; auto: mnist for MNIST models, else resize")
    w.add_argument("--max-upload-mb", type=_positive_int, default=8,
                   help="largest image accepted, in MiB (default 8)")
    w.set_defaults(func=cmd_serve)

    i = sub.add_parser("inspect", help="feature maps, first-layer filters and Grad-CAM of a saved "
                                       "model for image files, as PNGs",
                       description="Write, for each image, <name>-maps.png (the feature maps of every "
                                   "conv layer) and <name>-gradcam.png (Grad-CAM for the predicted "
                                   "class, or --class), and filters.png (the first conv's filters).")
    i.add_argument("model_path", help="a run directory or a model .safetensors file")
    i.add_argument("images", nargs="+", help="image files")
    i.add_argument("--out", default="inspect", help="folder for the PNGs (default: inspect)")
    i.add_argument("--class", dest="target", metavar="CLASS",
                   help="Grad-CAM for this class (name or index) instead of the predicted one")
    image_flags(i)
    i.set_defaults(func=cmd_inspect)

    m = sub.add_parser("models", help="list the model zoo")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("recipes", help="list the training recipes, or show one")
    r.add_argument("name", nargs="?", help="show this recipe's every field")
    r.set_defaults(func=cmd_recipes)

    v = sub.add_parser("preview", help="save a figure of augmented training samples")
    v.add_argument("--dataset", default="mnist")
    v.add_argument("--out", default="augment_preview.png")
    v.add_argument("--data-dir")
    v.set_defaults(func=cmd_preview)

    w = sub.add_parser("sweep", help="search a recipe's fields on a validation split (Optuna; Ray "
                                     "Tune across machines)",
                       description="Run, or continue, the recipe search a spec file describes (see "
                                   "minivgg.sweep for its keys). Trials score on a validation split "
                                   "of the training set; the test set is never loaded. Writes the "
                                   "trials table, best_recipe.json and plots to --out; running the "
                                   "same command again continues an interrupted sweep.")
    w.add_argument("spec", help="sweep spec, .json (or .yaml with PyYAML)")
    w.add_argument("--out", help="the sweep's folder (default: sweeps/<name>)")
    w.add_argument("--workers", type=_positive_int,
                   help="worker processes on this machine, the CPU threads shared between them "
                        "(default 1)")
    w.add_argument("--ray", metavar="ADDRESS",
                   help="run the trials on a Ray cluster (ADDRESS of its head, or auto)")
    w.add_argument("--cpus-per-trial", type=_positive_int,
                   help="with --ray: CPUs (and BLAS/Numba threads) each trial gets (default 1)")
    w.add_argument("--data-dir", help="folder holding <dataset>/ files on every machine (default: "
                                      "$MINIVGG_DATA, else the per-user cache)")
    w.set_defaults(func=cmd_sweep)

    c = sub.add_parser("compare", help="overlay the loss/accuracy curves of several runs and tabulate "
                                       "their final figures",
                       description="Overlay the train/test loss and accuracy curves of several run "
                                   "directories (or benchmarks/accuracy.py JSON files) in one figure, "
                                   "and print their final test accuracy and training time.")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `minivgg train`")
    c.add_argument("--out", default="compare.png", help="figure file (.png, .svg or .pdf; default: "
                                                        "compare.png)")
    c.add_argument("--labels", help="comma-separated labels, one per run (default: folder names)")
    c.add_argument("--title", help="figure title")
    c.set_defaults(func=cmd_compare)
    return parser


def _version() -> str:
    from . import __version__
    return f"minivgg {__version__}"


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"minivgg: warning: {message}\n"


def use_one_line_warnings() -> None:
    """Print warnings as one 'minivgg: warning: ...' line, each distinct message once (a
    dataset archive read for both splits would otherwise warn twice)."""
    import warnings

    warnings.formatwarning = _one_line_warning
    warnings.simplefilter("once")


def main(argv=None) -> int:
    use_one_line_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from .checkpoint import CheckpointError
    from .train import TrainingDiverged, TrainingInterrupted

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("minivgg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingInterrupted as e:
        print(f"minivgg: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # whatever read our output stopped early (`minivgg eval RUN | head`): not an error, and
        # the interpreter's last flush must not fail on the closed pipe either
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 0
    except (CLIError, CheckpointError, TrainingDiverged, ValueError, KeyError, OSError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"minivgg {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE if not isinstance(e, TrainingDiverged) else 1


if __name__ == "__main__":
    sys.exit(main())
