"""The training loop: the only place that calls backward() and step().

Per-epoch statistics are gathered from the training pass itself into one small tensor on the device,
read back once per epoch (and every `refresh` steps for the progress bar), never per step.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

# Order of the per-epoch counters accumulated on the device.
_STATS = ("loss_sum", "n", "wrong", "noisy_n", "noisy_wrong", "noisy_true", "clean_n", "clean_wrong")


def resolve_device(text: str) -> torch.device:
    """`auto` (the GPU when there is one), `cpu`, `cuda` or `cuda:i`."""
    from .errors import SpecError
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


def make_optimizer(spec, models) -> torch.optim.Optimizer:
    """One SGD over the parameters of every model (co-teaching's two networks get the same rule)."""
    params = [p for m in models for p in m.parameters()]
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                           weight_decay=spec.weight_decay)


def autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def train_epoch(models, method, optimizer, loader, epoch: int, *, is_noisy: torch.Tensor,
                clean: torch.Tensor, amp: bool = False, progress=None, refresh: int = 25) -> dict:
    """One pass over the training set. `is_noisy` and `clean` (indexed by sample) are used for the
    statistics only; the method sees the noisy labels in `batch.y`.

    Returns the epoch's figures: train_loss, train_err (against the noisy labels), noisy_err (on the
    wrong-label images, against the wrong label: the OLS paper's Fig. 5), noisy_true_acc (fraction of
    those predicted as their true class), clean_subset_err (on the correctly labelled images).
    """
    for m in models:
        m.train()
    device = is_noisy.device
    method.on_epoch_start(epoch, models)
    acc = torch.zeros(len(_STATS), dtype=torch.float64, device=device)
    for step, batch in enumerate(loader.epoch(epoch)):
        with autocast(device, amp):
            out = method.training_step(models, batch, epoch)
        if step == 0:  # metadata only (types, shapes): no synchronisation
            check_step_output(method, out, batch, models)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        method.after_backward(batch, out)
        acc += _batch_stats(out, batch, is_noisy, clean)
        if progress is not None and (step + 1) % refresh == 0:
            _show(progress, acc, refresh)
    if progress is not None:
        _show(progress, acc, len(loader) % refresh)
    return _epoch_figures(acc.tolist())


def check_step_output(method, out, batch, models) -> None:
    """The run-time half of the method contract; ContractError names the method and the rule."""
    from .errors import ContractError
    from .methods import StepOutput
    label = method.label

    def fail(rule):
        raise ContractError(f"method {label!r}: {rule}")
    if not isinstance(out, StepOutput):
        fail(f"training_step returned {type(out).__name__}, not StepOutput(loss, logits) "
             "(rule: training_step returns robustbench_ols.methods.StepOutput)")
    if not torch.is_tensor(out.loss) or out.loss.dim() != 0:
        shape = tuple(out.loss.shape) if torch.is_tensor(out.loss) else type(out.loss).__name__
        fail(f"the loss is {shape}, not a scalar tensor (rule: loss() returns the batch mean as a 0-d tensor)")
    if not out.loss.requires_grad:
        fail("the loss has no gradient (rule: the loss must be computed from the model's output, "
             "not detached or converted to a number)")
    if not torch.is_tensor(out.logits) or out.logits.shape[0] != len(batch.y) or out.logits.dim() != 2:
        fail("StepOutput.logits must be model 1's (B, K) logits on batch.x (rule: the trainer's "
             "statistics read them)")


def _batch_stats(out, batch, is_noisy, clean) -> torch.Tensor:
    with torch.no_grad():
        pred = out.logits.argmax(1)
        wrong = pred != batch.y
        nz = is_noisy[batch.index]
        cl = ~nz
        # new_full fills on the device; torch.tensor(..., device=cuda) would copy from the host.
        b = pred.new_full((), len(pred), dtype=torch.float64)
        return torch.stack([out.loss.detach().double() * b, b, wrong.sum(), nz.sum(), (wrong & nz).sum(),
                            ((pred == clean[batch.index]) & nz).sum(), cl.sum(), (wrong & cl).sum()
                            ]).double()


def _show(progress, acc, steps: int) -> None:
    loss_sum, n, wrong = acc[:3].tolist()
    progress.update(steps)
    if n:
        progress.set_postfix(loss=f"{loss_sum / n:.4f}", err=f"{wrong / n:.4f}", refresh=False)


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _epoch_figures(v: list) -> dict:
    s = dict(zip(_STATS, v))
    return {"train_loss": _ratio(s["loss_sum"], s["n"]), "train_err": _ratio(s["wrong"], s["n"]),
            "noisy_err": _ratio(s["noisy_wrong"], s["noisy_n"]),
            "noisy_true_acc": _ratio(s["noisy_true"], s["noisy_n"]),
            "clean_subset_err": _ratio(s["clean_wrong"], s["clean_n"])}


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


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0
