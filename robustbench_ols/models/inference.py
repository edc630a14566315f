"""A model applied to images outside the training step: the device, autocast, logits chunk by chunk,
and the clean loss and error (the per-epoch test pass, the final scores, `FitInfo.scan`)."""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.models.precision import amp_dtype


def resolve_device(text: str) -> torch.device:
    """`auto` (the GPU when there is one), `cpu`, `cuda` or `cuda:i`."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise SpecError(f"unknown --device {text!r}; valid: auto, cpu, cuda, cuda:i") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError(f"--device {text}: no CUDA GPU is visible; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpecError(f"--device {text}: only {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type != "cpu":
        raise SpecError(f"unsupported --device {text!r}; valid: auto, cpu, cuda, cuda:i")
    return dev


def autocast(device: torch.device, amp):
    """`amp`: False/None (no autocast), a dtype, or True (the device's: precision.amp_dtype)."""
    if not amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp if isinstance(amp, torch.dtype) else amp_dtype(device))


@torch.no_grad()  # not inference_mode: a method may weight a differentiable loss with these
def predict_logits(model, images: torch.Tensor, *, batch_size: int = 1000, channels_last: bool = False,
                   amp: bool = False):
    """Yield float32 logits of `model` (eval mode, no augmentation) on uint8 images, chunk by chunk,
    in order; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].float().div_(255)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(images.device, amp):
                yield model(x).float()
    finally:
        model.train(was_training)


@torch.inference_mode()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, **kw) -> dict:
    """Mean CE and top-1 error of `model` (eval mode, no augmentation) on uint8 images."""
    loss = torch.zeros((), dtype=torch.float64, device=images.device)
    wrong = torch.zeros((), dtype=torch.float64, device=images.device)
    start = 0
    for logits in predict_logits(model, images, **kw):
        y = labels[start:start + len(logits)]
        start += len(logits)
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        wrong += (logits.argmax(1) != y).sum()
    n = len(images)
    return {"test_loss": loss.item() / n, "test_err": wrong.item() / n}
