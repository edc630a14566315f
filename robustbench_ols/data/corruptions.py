"""Corrupted copies of a test subset, in the manner of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), generated
here: NOT the official CIFAR-10-C release.

The images are made with the `imagecorruptions-imaug` package (the maintained fork of Michaelis et al.'s
`imagecorruptions`; 1.1.2 of the original fails on glass_blur and fog with NumPy 2 and scikit-image 0.26): the 15
corruptions of CIFAR-10-C at severities 1-5. That package carries the ImageNet-C parameters, which differ from those
of the official CIFAR-10-C files (e.g. glass blur's sigma 0.7-1.5 where CIFAR-10-C uses 0.05-0.45), so a severity
here is not the same as in published CIFAR-10-C tables: compare methods with each other, not with those tables.

One fixed, class-balanced subset of the test set (`n` images, seeded) is corrupted once and cached under the data
root, in a folder named by the test set's md5, `n`, the seed and the package's version: one `<corruption>.npy`
(uint8, (5, n, 32, 32, 3): severities 1-5) per corruption, each written whole (temporary file, then rename), so an
interrupted build keeps what it finished. Every (corruption, severity) pass is seeded, so a build is reproducible:
numpy's global generator for the corruptions that use it, the `seed=` argument for impulse noise and glass blur
(which otherwise draw from an unseeded generator).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data.files import resolve_data_root

# CIFAR-10-C's 15 corruptions, in its order (noise, blur, weather, digital)
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)
PACKAGE = "imagecorruptions-imaug"
PINNED = "1.1.5"  # the version the suite is tested with (pyproject.toml's `shift` extra)
FOLDER = "corruptions-generated"
_SEEDED_BY_ARGUMENT = ("impulse_noise", "glass_blur")


def check_corruptions(names, severities) -> None:
    """SpecError naming an unknown corruption or a severity outside 1-5."""
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise SpecError(f"unknown corruption {unknown[0]!r} (--corruptions); valid: {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        given = ",".join(f"{s:g}" for s in severities) or "(empty)"
        raise SpecError(f"--severities {given}: each must be 1, 2, 3, 4 or 5")


def package_version() -> str:
    """The installed imagecorruptions-imaug's version; SpecError saying how to install it when it is missing."""
    if importlib.util.find_spec("imagecorruptions") is not None:
        try:
            return version(PACKAGE)
        except PackageNotFoundError:  # the unmaintained original, which fails on NumPy 2
            pass
    raise SpecError(f"--shift corruptions needs the {PACKAGE} package: pip install '{PACKAGE}=={PINNED}' "
                    "(or the suite's extra: pip install -e '.[shift]')")


def cache_folder(test_x: np.ndarray, n: int, seed: int, data_root=None) -> Path:
    """<data root>/corruptions-generated/<test md5 12>-n<n>-seed<seed>-imagecorruptions-imaug-<version>."""
    md5 = hashlib.md5(np.ascontiguousarray(test_x).tobytes()).hexdigest()[:12]
    return resolve_data_root(data_root) / FOLDER / f"{md5}-n{n}-seed{seed}-{PACKAGE}-{package_version()}"


def corrupted(images_hwc: np.ndarray, folder: Path, name: str, seed: int, on_built=None) -> np.ndarray:
    """uint8 (5, n, 32, 32, 3): `images_hwc` (uint8 (n, 32, 32, 3)) under corruption `name` at severities 1-5, read
    from `folder` or built there first (`on_built(name, seconds)` is told)."""
    path = folder / f"{name}.npy"
    if path.is_file():
        return np.load(path)
    import imagecorruptions  # loaded only when a corrupted set is built
    start = time.perf_counter()
    out = np.empty((len(SEVERITIES), *images_hwc.shape), np.uint8)
    for s in SEVERITIES:
        pass_seed = seed * 1_000_003 + CORRUPTIONS.index(name) * 10 + s
        np.random.seed(pass_seed % 2**32)
        random.seed(pass_seed)
        extra = {}
        for i, img in enumerate(images_hwc):
            if name in _SEEDED_BY_ARGUMENT:
                extra = {"seed": (pass_seed * 100_003 + i) % 2**31}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the package's own deprecation warnings
                out[s - 1, i] = np.clip(np.rint(imagecorruptions.corrupt(img, severity=s, corruption_name=name,
                                                                         **extra)), 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, out)
    os.replace(tmp, path)
    if on_built is not None:
        on_built(name, time.perf_counter() - start)
    return out


def describe(folder: Path, indices: np.ndarray, seed: int) -> None:
    """about.json beside the arrays: what they are (written once)."""
    about = folder / "about.json"
    if about.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    about.write_text(json.dumps({
        "what": "generated CIFAR-10-C-style corruptions, NOT the official CIFAR-10-C release",
        "package": PACKAGE, "version": package_version(), "corruptions": list(CORRUPTIONS),
        "severities": list(SEVERITIES), "seed": seed, "test_indices": [int(i) for i in indices]}, indent=1))
