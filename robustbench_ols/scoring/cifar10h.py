"""CIFAR-10H human label distributions (Peterson et al., ICCV 2019) and agreement metrics.

The file `cifar-10h/cifar10h-probs.npy` under the data root holds, for each of the 10,000 CIFAR-10
**test** images in test-set order, the distribution of 47-63 human votes over the 10 classes
(float64 (10000, 10), rows sum to 1; 80.6% of the entries are 0).

Metrics (REFERENCE.md, section Evaluation), all on probabilities, never logits:
- KL(h || p) = sum_k h_k (log h_k - log p_k); terms with h_k = 0 contribute 0 and p is clamped to
  at least `eps`, so the value is always finite. (KL(p || h) is infinite for most images: not offered.)
- `c10h_kl_correct`: mean KL over the test images the model classifies correctly (the OLS paper's);
- `c10h_kl_all`: mean KL over all images;
- `c10h_ce`: Peterson et al.'s cross-entropy -sum_k h_k log p_k, mean over all images;
- `c10h_agree`: top-1 agreement with the human majority; on the images whose human votes tie for the
  majority, a prediction of any of the tied classes counts as agreement (a convention: the strict
  alternative, "the one human mode", is undefined there).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from robustbench_ols.common.errors import DataError
from robustbench_ols.data.files import md5sum, resolve_data_root

__all__ = ["FOLDER", "FILENAME", "MD5", "URL", "NUM_IMAGES", "NUM_CLASSES", "METRIC_KEYS",
           "cifar10h_path", "load_cifar10h", "kl_human_model", "cross_entropy_human_model",
           "cifar10h_metrics", "describe_cifar10h"]

FOLDER = "cifar-10h"
FILENAME = "cifar10h-probs.npy"
MD5 = "7b41f73eee90fdefc73bfc820ab29ba8"
URL = "https://raw.githubusercontent.com/jcpeterson/cifar-10h/master/data/cifar10h-probs.npy"
NUM_IMAGES, NUM_CLASSES = 10000, 10
MIN_AGREEMENT = 0.95  # the real file agrees with the test labels for 99.21% of images
DOWNLOAD_TIMEOUT_S = 30
METRIC_KEYS = ("c10h_kl_correct", "c10h_kl_all", "c10h_ce", "c10h_agree")


# --------------------------------------------------------------------------------------------------
# loading

def cifar10h_path(data_root=None) -> Path:
    """Where the file is searched: <data root>/cifar-10h/cifar10h-probs.npy."""
    return resolve_data_root(data_root) / FOLDER / FILENAME


def load_cifar10h(data_root=None, *, test_labels=None, download: bool = True,
                  verify: bool = True) -> np.ndarray:
    """The CIFAR-10H human label distributions, float64 (10000, 10), rows in CIFAR-10 test order.

    Reads `cifar-10h/cifar10h-probs.npy` under the data root (`data_root`, else $RBOLS_DATA, else
    ~/.cache/robustbench_ols). When it is missing and `download` is true, fetches it from the public
    repository (github.com/jcpeterson/cifar-10h, 30 s timeout) and saves it atomically. `verify`
    checks the md5 of the official file (turn it off only for files a test writes itself). The
    contents are always checked: shape, finite, non-negative, rows summing to 1, and, when the
    CIFAR-10 `test_labels` are given, an argmax agreeing with them for at least 95% of images, so a
    misordered or foreign file raises DataError instead of giving a silent wrong number.
    """
    path = cifar10h_path(data_root)
    failure = None
    if not path.is_file() and download:
        failure = _download(path)
    if not path.is_file():
        how = (f"the download from {URL} failed ({failure}; is this machine offline?)"
               if download else "download was off")
        raise DataError(
            f"CIFAR-10H file not found: searched {path}, and {how}. Copy {FILENAME} (from "
            f"github.com/jcpeterson/cifar-10h, folder data/) to {path.parent}/, or set --data-root or "
            f"the environment variable RBOLS_DATA to a folder that holds {FOLDER}/{FILENAME}.")
    if verify:
        got = md5sum(path)
        if got != MD5:
            raise DataError(f"corrupt CIFAR-10H file {path}: md5 {got}, expected {MD5}. Delete it and "
                            f"download or copy {FILENAME} again (or point --data-root/RBOLS_DATA at a "
                            "good copy).")
    try:
        human = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"unreadable CIFAR-10H file {path} ({type(e).__name__}: {e}); it is damaged "
                        f"or not a .npy array: download or copy {FILENAME} again") from None
    return check_cifar10h(human, test_labels=test_labels, source=path)


def describe_cifar10h(root: Path) -> str:
    """`rbols data check`'s line for the CIFAR-10H file under the data root `root` (md5 and contents checked)."""
    path = Path(root) / FOLDER / FILENAME
    if not path.is_file():
        return (f"  CIFAR-10H: not found ({path}); only the CIFAR-10H figures need it (score without them: "
                "--no-cifar10h)")
    human = load_cifar10h(root, download=False)
    return (f"  CIFAR-10H: {FOLDER}/{FILENAME} md5 ok; {human.shape[0]} test images x {human.shape[1]} classes, "
            "each row a distribution")


def check_cifar10h(human, *, test_labels=None, source="CIFAR-10H array") -> np.ndarray:
    """Validate an array of human distributions (see `load_cifar10h`); returns it as float64."""
    human = np.asarray(human)
    want = (NUM_IMAGES, NUM_CLASSES)
    if human.shape != want:
        raise DataError(f"{source}: shape {human.shape}, expected {want} (one row of 10 class "
                        "probabilities per CIFAR-10 test image): not the CIFAR-10H probs file; copy "
                        f"{FILENAME} again")
    if not (np.issubdtype(human.dtype, np.floating) or np.issubdtype(human.dtype, np.integer)):
        raise DataError(f"{source}: dtype {human.dtype} is not numeric: not the CIFAR-10H probs file")
    human = human.astype(np.float64, copy=False)
    if not np.isfinite(human).all():
        raise DataError(f"{source}: {int((~np.isfinite(human)).sum())} entries are not finite; the "
                        f"file is damaged: copy {FILENAME} again")
    if (human < 0).any():
        raise DataError(f"{source}: {int((human < 0).sum())} entries are negative; these are not "
                        f"probabilities: copy {FILENAME} again")
    sums = human.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if len(bad):
        raise DataError(f"{source}: {len(bad)} rows do not sum to 1 (first: row {bad[0]}, sum "
                        f"{sums[bad[0]]:.6g}); this is not {FILENAME} (vote counts are in "
                        "cifar10h-counts.npy): copy the probs file again")
    if test_labels is not None:
        labels = _to_numpy(test_labels).astype(np.int64, copy=False).reshape(-1)
        if labels.shape != (NUM_IMAGES,):
            raise DataError(f"test_labels has shape {labels.shape}, expected ({NUM_IMAGES},): pass the "
                            "CIFAR-10 test labels in test-set order")
        agree = float((human.argmax(axis=1) == labels).mean())
        if agree < MIN_AGREEMENT:
            raise DataError(
                f"{source}: its majority label agrees with the CIFAR-10 test labels for only "
                f"{agree:.2%} of images (CIFAR-10H agrees for 99.21%; at least {MIN_AGREEMENT:.0%} "
                "required): the file is misordered or not CIFAR-10H, so its rows cannot be matched to "
                f"the test images. Copy {FILENAME} again from github.com/jcpeterson/cifar-10h.")
    return human


def _download(path: Path) -> str | None:
    """Fetch the official file to `path` (atomically, md5-checked). Returns None, or what went wrong;
    folders this call created stay only if the file was written."""
    made = [p for p in (path.parent.parent, path.parent) if not p.exists()]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(URL, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            data = resp.read()
        got = hashlib.md5(data).hexdigest()
        if got != MD5:
            return f"the downloaded file has md5 {got}, expected {MD5}"
        fd, tmp = tempfile.mkstemp(prefix=f".{FILENAME}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        tmp = None
        return None
    except Exception as e:  # noqa: BLE001 - network, HTTP or disk: all mean "not available"
        return f"{type(e).__name__}: {e}"
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not path.is_file():
            for p in reversed(made):
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()


# --------------------------------------------------------------------------------------------------
# metrics

def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, on any device
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.double()
        return x.numpy()
    return np.asarray(x)


def _prepare(human, probs, eps: float) -> tuple[np.ndarray, np.ndarray]:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    h = _to_numpy(human).astype(np.float64, copy=False)
    p = _to_numpy(probs).astype(np.float64, copy=False)
    if h.ndim != 2 or h.shape != p.shape:
        raise ValueError(f"human {h.shape} and probs {p.shape} must have the same shape (N, K)")
    if len(h) == 0:
        raise ValueError("no images: human and probs are empty")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-2):
        raise ValueError("probs must be probabilities (non-negative rows summing to 1): apply "
                         "softmax to the logits first")
    return h, p


def _terms(h: np.ndarray, p: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image: sum_k h_k log h_k (0 log 0 = 0) and sum_k h_k log max(p_k, eps)."""
    h_log_h = (h * np.log(np.where(h > 0, h, 1.0))).sum(axis=1)
    h_log_p = (h * np.log(np.maximum(p, eps))).sum(axis=1)  # clamped p: h_k = 0 gives exactly 0
    return h_log_h, h_log_p


def kl_human_model(human, probs, *, eps: float = 1e-12) -> np.ndarray:
    """Per-image KL(human || model) = sum_k h_k (log h_k - log p_k), float64 (N,).

    Terms with h_k = 0 contribute 0; model probabilities are clamped to at least `eps`.
    `human` and `probs`: (N, K) numpy arrays or torch tensors of probabilities.
    """
    h, p = _prepare(human, probs, eps)
    h_log_h, h_log_p = _terms(h, p, eps)
    return h_log_h - h_log_p


def cross_entropy_human_model(human, probs, *, eps: float = 1e-12) -> np.ndarray:
    """Per-image cross-entropy -sum_k h_k log p_k (Peterson et al.), p clamped to at least `eps`."""
    h, p = _prepare(human, probs, eps)
    return -_terms(h, p, eps)[1]


def cifar10h_metrics(probs, labels, human, *, eps: float = 1e-12) -> dict:
    """The four CIFAR-10H figures for a model's test-set probabilities, as plain floats.

    - `c10h_kl_correct`: mean KL(human || model) over images with argmax probs == labels (None if the
      model gets none right);
    - `c10h_kl_all`: mean KL over all images;
    - `c10h_ce`: mean cross-entropy -sum_k h_k log p_k over all images;
    - `c10h_agree`: fraction of images whose model top-1 class is the human majority class. For the
      3 CIFAR-10H images with a tied majority, any of the tied classes counts as agreement.
    `probs` (N, K) and `human` (N, K): probabilities, numpy or torch; `labels` (N,): the test labels.
    """
    h, p = _prepare(human, probs, eps)
    y = _to_numpy(labels).astype(np.int64, copy=False).reshape(-1)
    if y.shape != (len(p),):
        raise ValueError(f"labels {y.shape} must have one entry per row of probs ({len(p)})")
    h_log_h, h_log_p = _terms(h, p, eps)
    kl = h_log_h - h_log_p
    pred = p.argmax(axis=1)
    correct = pred == y
    rows = np.arange(len(p))
    agree = h[rows, pred] >= h.max(axis=1)  # the model's top class is a (possibly tied) human mode
    return {
        "c10h_kl_correct": float(kl[correct].mean()) if correct.any() else None,
        "c10h_kl_all": float(kl.mean()),
        "c10h_ce": float(-h_log_p.mean()),
        "c10h_agree": float(agree.mean()),
    }
