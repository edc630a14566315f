"""Where and with what a number was computed: the device, the CPU's name, the torch threads, the code's
git commit and the library versions. Every record the store writes carries these."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from robustbench_ols import __version__


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # Linux names the CPU model here; platform.processor() is often empty
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def git_info() -> dict:
    """The commit of the package's source tree and whether the package had uncommitted changes, as when this process
    first asked (the package's import asks): a long-lived worker's records name the code it loaded, not a commit
    made while it ran."""
    package = Path(__file__).resolve().parent.parent  # robustbench_ols/: the whole package, not this folder
    try:
        commit = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(package), "status", "--porcelain", "--", "."],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty if commit else None}


git_info()  # at import, with the code this process runs


def versions(full: bool = False) -> dict:
    """This package's and torch's versions (`full`: numpy's and Python's too)."""
    v = {"robustbench_ols": __version__, "torch": torch.__version__}
    if full:
        v.update(numpy=np.__version__, python=platform.python_version())
    return v


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0
