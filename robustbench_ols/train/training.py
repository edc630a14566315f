"""The training loop: the only place that calls backward() and step().

Per-epoch statistics are gathered from the training pass itself into one small tensor on the device,
read back once per epoch (and every `refresh` steps for the progress bar), never per step.
"""
from __future__ import annotations

import math

import torch

from robustbench_ols.common import progress as progress_bars
from robustbench_ols.common.errors import ContractError
from robustbench_ols.common.provenance import Timer
from robustbench_ols.methods import StepOutput
from robustbench_ols.models.inference import autocast, evaluate

# Order of the per-epoch counters accumulated on the device.
_STATS = ("loss_sum", "n", "wrong", "noisy_n", "noisy_wrong", "noisy_true", "clean_n", "clean_wrong")


def make_optimizer(spec, models) -> torch.optim.Optimizer:
    """One SGD over the parameters of every model (co-teaching's two networks get the same rule)."""
    params = [p for m in models for p in m.parameters()]
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                           weight_decay=spec.weight_decay)


def train_epoch(models, method, optimizer, loader, epoch: int, *, is_noisy: torch.Tensor,
                clean: torch.Tensor, amp=False, scaler=None, progress=None, refresh: int = 25) -> dict:
    """One pass over the training set. `is_noisy` and `clean` (indexed by sample) are used for the
    statistics only; the method sees the noisy labels in `batch.y`. `amp`: the autocast dtype (or True: the
    device's, False: none); `scaler`: float16's GradScaler (its skip check reads the device every step).

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
        if scaler is None:
            out.loss.backward()
            optimizer.step()
        else:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        method.after_backward(batch, out)
        acc += _batch_stats(out, batch, is_noisy, clean)
        if progress is not None:
            progress.update(1)  # no synchronisation: the bar moves every step
            if (step + 1) % refresh == 0:
                _show(progress, acc)
    if progress is not None:
        _show(progress, acc)
    return _epoch_figures(acc.tolist())


def check_step_output(method, out, batch, models) -> None:
    """The run-time half of the method contract; ContractError names the method and the rule."""
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


def _show(progress, acc) -> None:
    """The running loss and error in the bar (reading them back synchronises a GPU: every `refresh` steps)."""
    loss_sum, n, wrong = acc[:3].tolist()
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


class NonFinite(Exception):
    """A non-finite training or test loss: the epoch is not kept (`epoch` is 1-based)."""

    def __init__(self, epoch: int, reason: str):
        super().__init__(reason)
        self.epoch, self.reason = epoch, reason


def fit(spec, models, method, optimizer, loader, state: dict, *, is_noisy, clean, test, epoch_test, val=None,
        eval_batch_size: int = 256, channels_last: bool = False, progress: bool = False,
        progress_position: int | None = None, on_epoch_end=None, amp=None) -> None:
    """The epoch loop, from the epoch after `state["epoch"]` to `spec.epochs`: each epoch's learning
    rate, its training pass, its test pass (`spec.tests_at`: the last epoch on the whole `test` set, the
    others on `epoch_test`; `val` too when the run has a validation split), the non-finite stop
    (`NonFinite`), then the row appended to `state["history"]` and `on_epoch_end(state)` (the
    checkpoint). `test`, `epoch_test` and `val` are (uint8 images, labels) on the models' device. `amp`: the
    autocast dtype (None: `spec.amp`'s default); float16 trains with a GradScaler kept in `state["scaler"]`."""
    bar = _progress_bar(spec, len(loader), state, progress, progress_position)
    amp = spec.amp if amp is None else amp
    scaler = None
    if amp is torch.float16:
        scaler = torch.amp.GradScaler(is_noisy.device.type)
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    ev = dict(batch_size=eval_batch_size, channels_last=channels_last, amp=amp)
    try:
        for epoch in range(state["epoch"] + 1, spec.epochs):
            timer = Timer()
            lr = spec.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            row = {"epoch": epoch + 1, "lr": lr}
            row.update(train_epoch(models, method, optimizer, loader, epoch, is_noisy=is_noisy,
                                   clean=clean, amp=amp, scaler=scaler, progress=bar))
            row["test_loss"] = row["test_err"] = row["val_loss"] = row["val_err"] = None
            if spec.tests_at(epoch):
                row.update(evaluate(models[0], *(test if epoch + 1 == spec.epochs else epoch_test), **ev))
                if val is not None:
                    v = evaluate(models[0], *val, **ev)
                    row.update(val_loss=v["test_loss"], val_err=v["test_err"])
            # The training loss is computed before each step; a last step that breaks the weights
            # only shows in the test loss. Either one non-finite: the epoch is not kept.
            bad = [k for k in ("train_loss", "test_loss") if row[k] is not None and not math.isfinite(row[k])]
            if bad:
                raise NonFinite(epoch + 1, f"non-finite {' and '.join(bad)} in epoch {epoch + 1}")
            row["seconds"] = timer.seconds()
            state["history"].append(row)
            state["epoch"] = epoch
            state["train_seconds"] += row["seconds"]
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            if on_epoch_end is not None:
                on_epoch_end(state)
            if bar is not None and row["test_err"] is not None:
                bar.set_description(f"{_run_label(spec)}, epoch {epoch + 1}/{spec.epochs} test_err {row['test_err']:.4f}")
    finally:
        if bar is not None:
            bar.close()


def _run_label(spec) -> str:
    return f"{spec.method} {spec.noise} seed {spec.seed}"


def _progress_bar(spec, steps_per_epoch, state, enabled, position=None):
    if not enabled:
        return None
    done = (state["epoch"] + 1) * steps_per_epoch
    return progress_bars.bar(spec.epochs * steps_per_epoch, _run_label(spec), "step",
                             initial=done, position=position,
                             leave=position is None)  # a worker's line is reused by its next cell
