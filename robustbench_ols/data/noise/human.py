"""CIFAR-10N / CIFAR-100N real human noisy labels (Wei et al., ICLR 2022).

Files `cifar-10n/CIFAR-10_human.pt` and `cifar-10n/CIFAR-100_human.pt` under the data root: torch zip
files holding a dict of int64 numpy arrays over the 50,000 training images in the official order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustbench_ols.common.errors import DataError
from robustbench_ols.data.files import md5sum, resolve_data_root

HUMAN_NAMES = {
    "cifar10": {"aggre": "aggre_label", "random1": "random_label1", "random2": "random_label2",
                "random3": "random_label3", "worst": "worse_label"},
    "cifar100": {"noisy": "noisy_label"},
}
_FILES = {"cifar10": ("CIFAR-10_human.pt", "96644db5574813cae939af5f7f2a0aec"),
          "cifar100": ("CIFAR-100_human.pt", "a67b45c1d7992051865b5c755bd68bb1")}
FOLDER = "cifar-10n"


def load_human_labels(dataset: str, name: str, data_root=None, *, clean: np.ndarray | None = None,
                      verify: bool = True) -> np.ndarray:
    """The human label set `name` for all training images; checked against `clean` when given."""
    fname, want = _FILES[dataset]
    path = resolve_data_root(data_root) / FOLDER / fname
    if not path.is_file():
        raise DataError(f"human labels {path} not found: put the CIFAR-N file {fname} in {path.parent} "
                        "(from the CIFAR-N project) or set --data-root / RBOLS_DATA")
    if verify and (got := md5sum(path)) != want:
        raise DataError(f"corrupt human-label file {path}: md5 {got}, expected {want}; copy it again")
    table = _read(path)
    labels = np.asarray(table[HUMAN_NAMES[dataset][name]], np.int64)
    if clean is not None:
        ref = np.asarray(table["clean_label"], np.int64)
        if len(ref) != len(clean) or not np.array_equal(ref, clean):
            raise DataError(f"{path}: its clean_label column does not match the {dataset} training "
                            "labels (misordered or a different dataset); human labels cannot be aligned")
    return labels


def _read(path: Path) -> dict:
    """torch.load with only numpy's array-rebuilding globals allowed (no arbitrary unpickling)."""
    allowed = [(np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray,
               (np.dtype, "numpy.dtype"), type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu")


def describe_human_labels(root: Path) -> list[str]:
    lines = []
    for dataset, (fname, want) in _FILES.items():
        path = root / FOLDER / fname
        if not path.is_file():
            lines.append(f"  {dataset} human labels: not found ({path})")
            continue
        if md5sum(path) != want:
            raise DataError(f"corrupt human-label file {path}: md5 differs from {want}; copy it again")
        table = _read(path)
        clean = np.asarray(table["clean_label"])
        rates = ", ".join(f"{n} {np.mean(np.asarray(table[key]) != clean):.2%}"
                          for n, key in HUMAN_NAMES[dataset].items())
        lines.append(f"  {dataset} human labels: {FOLDER}/{path.name} md5 ok; noise rates {rates}")
    return lines
