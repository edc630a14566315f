"""CIFAR-10/100 and a synthetic set as uint8 tensors (the training loader: loader.py; `rbols data check`: check.py).

Layouts accepted under a data root:
- `cifar-10-batches-py/`, `cifar-100-python/`: the python pickles that
  `torchvision.datasets.CIFAR10/100(download=True)` writes;
- `cifar-10-batches-bin/`: the official CIFAR-10 binary version (records of 1 label byte + 3072 pixel
  bytes, R then G then B planes, row-major 32x32).
Both hold the same pixels and labels in the same order. Images are returned as uint8 tensors of shape
(N, 3, 32, 32); labels as int64 numpy arrays.
"""
from __future__ import annotations

import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustbench_ols.common.errors import DataError
from robustbench_ols.common.registry import Registry
from robustbench_ols.data.files import ENV_VAR, md5sum, resolve_data_root
from robustbench_ols.data.loader import Batch, TrainLoader, augment_batch, class_balanced_subset  # noqa: F401 (the stage's names)

# md5 sums of the official files (the python ones are those torchvision checks).
_MD5 = {
    "cifar-10-batches-bin": {
        "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
        "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
        "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
        "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
        "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
        "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
    },
    "cifar-10-batches-py": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar-100-python": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
}
_LAYOUTS = {"cifar10": ("cifar-10-batches-py", "cifar-10-batches-bin"), "cifar100": ("cifar-100-python",)}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageData:
    """A dataset in memory. `fine_to_coarse[k]` is the superclass of class k (CIFAR-100 only)."""
    name: str
    train_x: torch.Tensor  # uint8 (N, 3, 32, 32)
    train_y: np.ndarray  # int64 (N,), clean labels
    test_x: torch.Tensor
    test_y: np.ndarray
    classes: tuple
    source: str  # where the pixels came from (layout and folder), for the run record
    fine_to_coarse: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# A dataset is a function (name, data_root, download, verify, seed) -> ImageData registered under its name:
# a new one is one function plus one registration (plugins: the entry-point group below).
DATASETS = Registry("dataset", group="robustbench_ols.datasets", error=DataError)


def load_dataset(name: str, data_root=None, *, download: bool = True, verify: bool = True,
                 seed: int = 0) -> ImageData:
    """Load a registered dataset: `cifar10`, `cifar100` or `synthetic` (generated from `seed`, for fast
    tests only), or a plugin's."""
    return DATASETS.get(name)(name, data_root, download=download, verify=verify, seed=seed)


@DATASETS.register("cifar10")
@DATASETS.register("cifar100")
def _load_cifar(name: str, data_root, *, download: bool, verify: bool, seed: int) -> ImageData:
    root = resolve_data_root(data_root)
    folder = find_layout(name, root)
    failure = None
    if folder is None and download:
        failure = _download(name, root)
        folder = find_layout(name, root)
    if folder is None:
        raise DataError(_missing_message(name, root, download, failure))
    if verify:
        verify_folder(folder)
    reader = {"cifar-10-batches-bin": _read_cifar10_bin, "cifar-10-batches-py": _read_cifar10_py,
              "cifar-100-python": _read_cifar100_py}[folder.name]
    try:
        return reader(folder)
    except (ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
        raise DataError(f"unreadable data in {folder} ({type(e).__name__}: {e}); the files are damaged "
                        "or not CIFAR: download or copy them again (md5 checking would name the file)") from None


def find_layout(name: str, root: Path) -> Path | None:
    """The first complete layout folder for `name` under `root` (all expected files present)."""
    for layout in _LAYOUTS[name]:
        folder = root / layout
        if folder.is_dir() and all((folder / f).is_file() for f in _MD5[layout]):
            return folder
    return None


def verify_folder(folder: Path, only: str | None = None) -> None:
    """Check every file's md5 (or the file `only`); the error names the corrupt file and what to do."""
    for fname, want in _MD5[folder.name].items():
        if only is not None and fname != only:
            continue
        got = md5sum(folder / fname)
        if got != want:
            raise DataError(
                f"corrupt data file {folder / fname}: md5 {got}, expected {want}. Delete the folder "
                f"{folder} and download or copy CIFAR again (or point --data-root/${ENV_VAR} at a good copy).")


def _missing_message(name: str, root: Path, tried_download: bool, failure: str | None = None) -> str:
    layouts = " or ".join(f"{root / layout}/" for layout in _LAYOUTS[name])
    how = (f"the download through torchvision failed ({failure}; is this machine offline?)"
           if tried_download else "download was off")
    return (f"{name} not found under the data root {root} and {how}. Accepted layouts: {layouts} "
            f"(the python layout torchvision downloads"
            f"{', or the official CIFAR-10 binary layout' if name == 'cifar10' else ''}). "
            f"Set --data-root or the environment variable {ENV_VAR} to a folder that holds one.")


def _download(name: str, root: Path) -> str | None:
    """Fetch through torchvision when online. Returns None, or what went wrong (for the message);
    a data root this call created stays only if something was written into it."""
    from torchvision import (
        datasets,  # here: ~1 s to import, and only a download needs it
    )
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    created = not root.exists()
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True)
        return None
    except Exception as e:  # noqa: BLE001 - network, disk or archive: all mean "not available"
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        return f"{type(e).__name__}: {e}"
    finally:
        socket.setdefaulttimeout(old)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _to_images(flat: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(flat.reshape(-1, 3, 32, 32), dtype=np.uint8))


def _read_cifar10_bin(folder: Path) -> ImageData:
    def read(fname):
        rec = np.fromfile(folder / fname, dtype=np.uint8).reshape(-1, 3073)
        return rec[:, 1:], rec[:, 0].astype(np.int64)
    parts = [read(f"data_batch_{i}.bin") for i in range(1, 6)]
    tx, ty = read("test_batch.bin")
    return ImageData("cifar10", _to_images(np.concatenate([p[0] for p in parts])),
                     np.concatenate([p[1] for p in parts]), _to_images(tx), ty, CIFAR10_CLASSES,
                     source=f"binary layout, {folder}")


def _read_cifar10_py(folder: Path) -> ImageData:
    parts = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = _unpickle(folder / "test_batch")
    classes = tuple(_unpickle(folder / "batches.meta")["label_names"])
    return ImageData("cifar10", _to_images(np.concatenate([p["data"] for p in parts])),
                     np.concatenate([np.asarray(p["labels"], np.int64) for p in parts]),
                     _to_images(test["data"]), np.asarray(test["labels"], np.int64), classes,
                     source=f"python layout, {folder}")


def _read_cifar100_py(folder: Path) -> ImageData:
    train, test = _unpickle(folder / "train"), _unpickle(folder / "test")
    classes = tuple(_unpickle(folder / "meta")["fine_label_names"])
    fine = np.asarray(train["fine_labels"], np.int64)
    coarse = np.asarray(train["coarse_labels"], np.int64)
    fine_to_coarse = np.full(len(classes), -1, np.int64)
    fine_to_coarse[fine] = coarse
    if (fine_to_coarse < 0).any():
        raise ValueError(f"classes {np.flatnonzero(fine_to_coarse < 0).tolist()} never occur in train")
    return ImageData("cifar100", _to_images(train["data"]), fine, _to_images(test["data"]),
                     np.asarray(test["fine_labels"], np.int64), classes,
                     source=f"python layout, {folder}", fine_to_coarse=fine_to_coarse)


@DATASETS.register("synthetic")
def _load_synthetic(name: str, data_root, *, download: bool, verify: bool, seed: int) -> ImageData:
    return make_synthetic(seed=seed)


def make_synthetic(*, seed: int = 0, num_classes: int = 10, n_train: int = 1000,
                   n_test: int = 500) -> ImageData:
    """SYNTHETIC DATA, FOR FAST TESTS ONLY: each class is a smooth random colour pattern plus noise.

    Learnable by a small ResNet in a couple of epochs; says nothing about CIFAR.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, 3, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=32, mode="bilinear", align_corners=False)

    def sample(n):
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = 0.25 + 0.5 * protos[y] + 0.15 * torch.randn(n, 3, 32, 32, generator=g)
        x = x + 0.1 * torch.randn(n, 1, 1, 1, generator=g)  # brightness jitter per image
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y.numpy().astype(np.int64)
    tx, ty = sample(n_train)
    vx, vy = sample(n_test)
    return ImageData("synthetic", tx, ty, vx, vy, tuple(f"class{k}" for k in range(num_classes)),
                     source=f"synthetic (seed {seed}): for fast tests only, not an image dataset")
