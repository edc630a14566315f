"""`--compile` (issue 27): each model's forward compiled with torch.compile (TorchInductor, its default mode) while
the run trains, its per-epoch test pass included. Scoring after training stays eager, so evaluation records and
eval ids do not depend on the flag, and the weights saved are the model's own (its state_dict is untouched).

Compiled kernels fuse and reorder float sums: a compiled run equals an eager one within float rounding, not bit
for bit (tests/training/test_compile.py measures it); spec.json's execution and executions.json say which ran.
Measured speed: benchmarks/compile_speed.py. The first steps pay the compilation (seconds to tens of seconds, then
reused from inductor's on-disk cache by later runs of the same model).

Where torch.compile cannot run (no TorchDynamo for this Python, no C++ compiler for CPU kernels, no Triton for GPU
kernels), `check_supported` refuses before anything is written (exit 2); a step torch.compile cannot compile, or
cannot differentiate (MW-Net's double backward), fails at its first call and `compile_error` names it (exit 2; the
run directory is removed, so nothing is written).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys

import torch

from robustbench_ols.common.errors import SpecError

MODE = "default"  # torch.compile's; "reduce-overhead" (CUDA graphs) is not offered: it has never run on a GPU here


def check_supported(device) -> None:
    """SpecError naming what is missing where torch.compile cannot compile for `device` (a torch.device, or --device's
    text: auto, cpu, cuda, cuda:i; checked at the command's entry and again by each run)."""
    kind = "cuda" if str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available()) else "cpu"
    if not torch._dynamo.is_dynamo_supported():
        raise SpecError(f"--compile: torch {torch.__version__} has no TorchDynamo for Python "
                        f"{sys.version.split()[0]}; run without --compile")
    if kind == "cpu":
        # the compiler inductor calls for CPU kernels: $CXX, else g++ (clang++ on macOS), as torch._inductor.config
        cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(cxx) is None:
            raise SpecError(f"--compile on the CPU needs a C++ compiler for TorchInductor's kernels and {cxx!r} is "
                            "not on PATH: install one (Debian: apt install g++) or set CXX, or run without --compile")
    else:
        from torch.utils._triton import has_triton
        if not has_triton():
            raise SpecError("--compile on a GPU needs Triton for TorchInductor's kernels and it is not importable: "
                            "pip install triton (the CUDA builds of torch bring it), or run without --compile")


@contextlib.contextmanager
def compiled(models, on: bool = True):
    """Within the block each model's forward is its torch.compile'd self (an instance attribute over the class's
    method, removed on leaving, so state_dict, deep copies before and after, and scoring see the eager model)."""
    if not on:
        yield models
        return
    for m in models:
        m.forward = torch.compile(m.forward, mode=MODE)
    try:
        yield models
    finally:
        for m in models:
            del m.forward


# AOT autograd's refusals of a gradient of a gradient (MW-Net's look-ahead step), with its default donated buffers
# and without them (torch 2.14)
_DOUBLE_BACKWARD = ("non-empty donated buffers", "does not currently support double backward")


def compile_error(exc: BaseException) -> SpecError | None:
    """TorchDynamo's or TorchInductor's failure to compile a model or a method's step, or a compiled step's refusal
    of a double backward, as a SpecError naming it and the way out (None for any other error)."""
    if any(s in str(exc) for s in _DOUBLE_BACKWARD):
        return SpecError("--compile: this method's step differentiates through a gradient (a double backward, as "
                         "MW-Net's look-ahead does), which torch.compile's compiled backward does not support; run "
                         "without --compile")
    if not isinstance(exc, torch._dynamo.exc.TorchDynamoException):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return SpecError(f"--compile: torch.compile could not compile this run's step ({type(exc).__name__}: {first}); "
                     "run without --compile")


def record(on: bool) -> str | None:
    """What a run record says of the flag."""
    return f"torch.compile (inductor, mode {MODE}): training steps and the per-epoch test pass" if on else None
