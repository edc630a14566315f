"""`rbols data check`: what a data root holds, each file checked."""
from __future__ import annotations

import numpy as np

from robustbench_ols.data import _LAYOUTS, _MD5, find_layout, load_dataset, verify_folder
from robustbench_ols.data.files import resolve_data_root
from robustbench_ols.data.noise.human import describe_human_labels
from robustbench_ols.scoring.cifar10h import describe_cifar10h


def describe_root(data_root=None, *, verify: bool = True):
    """Lines for `rbols data check`, yielded as each file is checked (md5 of a CIFAR file: about a second):
    the CIFAR folders found, their counts, CIFAR-10H and the human-label files (CIFAR-10N, CIFAR-100N).
    DataError at the first corrupt file, naming it and the fix."""
    root = resolve_data_root(data_root)
    yield f"data root: {root}"
    for name in ("cifar10", "cifar100"):
        folder = find_layout(name, root)
        if folder is None:
            yield f"  {name}: not found (accepted: {', '.join(l + '/' for l in _LAYOUTS[name])})"
            continue
        for fname in _MD5[folder.name] if verify else ():
            verify_folder(folder, only=fname)
            yield f"  {folder.name}/{fname} md5 ok"
        d = load_dataset(name, root, download=False, verify=False)
        counts = np.bincount(d.train_y, minlength=d.num_classes)
        yield (f"  {name}: {folder.name}/ md5 {'ok' if verify else 'not checked'}; "
               f"{len(d.train_y)} train + {len(d.test_y)} test images, {d.num_classes} classes, "
               f"{counts.min()}-{counts.max()} train images per class")
    yield describe_cifar10h(root)
    yield from describe_human_labels(root)
