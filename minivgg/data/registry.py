"""The dataset registry: what each dataset is and where its official files come from.

Mean and std are per channel, of the training images scaled to [0, 1] (the values
Normalize uses); tests/test_realdata.py recomputes them from the real files.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownDatasetError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class FileInfo:
    """One file of an official distribution and its published checksums."""
    name: str
    md5: str
    sha256: str | None = None
    splits: tuple[str, ...] = SPLITS  # the splits that need this file


@dataclass(frozen=True)
class DatasetInfo:
    name: str              # registry name: "mnist", "fashion-mnist", "cifar10"
    folder: str            # sub-folder of the data directory holding the files
    format: str            # "idx" or "cifar"
    classes: list[str]
    shape: tuple[int, int, int]   # (C, H, W) of one image
    mean: tuple[float, ...]       # per channel, train set, [0, 1] scale
    std: tuple[float, ...]
    num_train: int
    num_test: int
    files: tuple[FileInfo, ...]   # what a download fetches (the official distribution)
    mirrors: tuple[str, ...]      # base URLs tried in order: official first, then mirrors
    alternates: tuple[FileInfo, ...] = ()  # other official packagings accepted on disk
    homepage: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def num_samples(self, split: str) -> int:
        return self.num_train if check_split(split) == "train" else self.num_test

    def files_for(self, split: str) -> tuple[FileInfo, ...]:
        check_split(split)
        return tuple(f for f in self.files if split in f.splits)

    def urls(self, file: FileInfo) -> list[str]:
        return [base + file.name for base in self.mirrors]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", folder="mnist", format="idx",
        classes=[str(d) for d in range(10)],
        shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,),
        num_train=60000, num_test=10000,
        files=(
            FileInfo("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", ("train",)),
            FileInfo("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", ("train",)),
            FileInfo("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", ("test",)),
            FileInfo("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", ("test",)),
        ),
        mirrors=("http://yann.lecun.com/exdb/mnist/",
                 "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist", folder="fashion-mnist", format="idx",
        classes=["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        shape=(1, 28, 28), mean=(0.2860,), std=(0.3530,),
        num_train=60000, num_test=10000,
        files=(
            FileInfo("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", ("train",)),
            FileInfo("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", ("train",)),
            FileInfo("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                     "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", ("test",)),
            FileInfo("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                     "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", ("test",)),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetInfo(
        name="cifar10", folder="cifar-10", format="cifar",
        classes=["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"],
        shape=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        num_train=50000, num_test=10000,
        files=(FileInfo("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),),
        alternates=(FileInfo("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}


def get_dataset_info(name: str, image_size: int | None = None, channels: int | None = None) -> DatasetInfo:
    """Registry entry of a dataset, or of an image folder when `name` is a folder's path
    (image_size and channels apply to folders only, see data.folders); an unknown name
    raises an error listing the valid ones."""
    if isinstance(name, str) and name in DATASETS:
        return DATASETS[name]
    from .folders import is_image_folder, open_image_folder
    if is_image_folder(name):
        return open_image_folder(name, image_size, channels).info
    raise UnknownDatasetError(f"unknown dataset {name!r}; valid names: "
                              f"{', '.join(sorted(DATASETS))}, or the path of a folder of images "
                              f"with one sub-folder per class")
