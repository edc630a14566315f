"""The numerics of a run or an evaluation, set by the suite and written in its records (issue 27).

- float32 matrix products and convolutions: IEEE float32 unless `--tf32`. torch leaves cuDNN's convolutions in
  TF32 on Ampere and newer GPUs by default, so an "fp32" record would not be what it says; the suite sets both
  cuBLAS's and cuDNN's flag itself. Default off: the suite's ResNets are bound by kernel launches on a GPU rather
  than by arithmetic (resnet56b at batch 128: about 6-8 ms of launches per step against 4-6 ms of H100 work in
  TF32, issue 27's estimate), so TF32 buys little there, and off, a CPU's and a GPU's float32 mean the same
  precision; `--amp` is the fast path. TF32 exists on GPUs only: a CPU record says ieee whatever the flag.
- autocast (`--amp`): bfloat16 where the run's own device computes it (CPUs; GPUs of compute capability 8.0 and
  newer), else float16 with a gradient scaler (V100, T4); `--amp-dtype` chooses. The record names it.
- `--deterministic`: deterministic algorithms, cuDNN's deterministic kernels without autotuning and cuBLAS's
  fixed workspace, so that a run resumed on a GPU gives the same weights as an uninterrupted one (on a CPU it
  does without). An op with no deterministic kernel then fails: `deterministic_error` names it (exit 2).
"""
from __future__ import annotations

import os
import re

import torch

from robustbench_ols.common.errors import SpecError

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
_SET: dict = {}  # this process's policy, as `apply` last set it (for `current`)


def set_float32(tf32: bool) -> None:
    """cuBLAS's and cuDNN's float32 products in TF32 (`tf32`) or IEEE float32, through torch's newer per-backend
    API where it exists (torch >= 2.9, which refuses a mix of the two APIs), else the older flags."""
    mode = "tf32" if tf32 else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:  # pragma: no cover - torch 2.6 to 2.8
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def set_deterministic(on: bool) -> None:
    """Deterministic algorithms (and cuDNN's, without autotuning) for this process. cuBLAS reads its workspace
    setting when it first starts, so it is set before any GPU work (the run sets it before building the model)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    if on:
        torch.backends.cudnn.benchmark = False


def amp_dtype(device, choice: str = "auto") -> torch.dtype:
    """The autocast dtype on `device`: `choice` (bfloat16 or float16), or for `auto` bfloat16 where the device
    itself computes it (a CPU; a GPU of compute capability 8.0 or newer: asked of this device, not of GPU 0)."""
    if choice != "auto":
        return AMP_DTYPES[choice]
    device = torch.device(device)
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.bfloat16


def apply(ex, device, amp: bool) -> dict:
    """Set this process's numerics from ExecOptions `ex`; the record of them (run and evaluation records)."""
    device = torch.device(device)
    set_float32(ex.tf32)
    set_deterministic(ex.deterministic)
    _SET.update(tf32=ex.tf32, deterministic=ex.deterministic)
    dtype = amp_dtype(device, ex.amp_dtype) if amp else None
    return {**current(device), "autocast": str(dtype).removeprefix("torch.") if dtype else None,
            "grad_scaler": dtype == torch.float16}


def current(device) -> dict:
    """This process's float32 policy and determinism as `apply` set them (an evaluation record's), or torch's
    defaults when nothing set them (TF32 convolutions on Ampere and newer GPUs)."""
    if not _SET:
        return {"float32": "torch's defaults", "deterministic": torch.are_deterministic_algorithms_enabled()}
    return {"float32": "tf32" if _SET["tf32"] and torch.device(device).type == "cuda" else "ieee",
            "deterministic": _SET["deterministic"]}


def deterministic_error(exc: BaseException) -> SpecError | None:
    """torch's refusal of an op without a deterministic kernel, as a SpecError naming the op and the way out."""
    m = re.search(r"(\S+) does not have a deterministic implementation", str(exc))
    if m is None:
        return None
    return SpecError(f"--deterministic: {m.group(1)} has no deterministic kernel on this device, so this run cannot "
                     "be made bit-for-bit reproducible; run without --deterministic (a resume on a GPU then gives "
                     "weights equal up to float rounding)")
