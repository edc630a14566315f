"""Where the data files live (the data root) and how they are checked (md5), for the CIFAR images
(data/__init__.py), the human labels (noise/human.py) and CIFAR-10H (scoring/cifar10h.py)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_VAR = "RBOLS_DATA"
DEFAULT_ROOT = "~/.cache/robustbench_ols"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """`--data-root`, else $RBOLS_DATA, else ~/.cache/robustbench_ols."""
    root = data_root or os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser().absolute()  # absolute, so the run record does not depend on the cwd


def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 22) -> str:
    """Hex digest of a file, read in chunks (hashlib.file_digest needs Python 3.11; we support 3.10)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")
