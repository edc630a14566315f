"""Robust error under L-inf attacks, image by image: FGSM and PGD-k through torchattacks, AutoAttack and
its attacks through the official code (parameter_free.py).

Conventions (RobustBench, torchattacks): images in [0, 1], normalisation inside the model, budgets in
pixel units (8/255). The model is put in eval mode for the attack and its previous mode restored.
FGSM (Goodfellow et al. 2015): x' = clip(x + eps * sign(grad_x CE), 0, 1), eps = 8/255.
PGD-k (Madry et al. 2018): random start in the eps-ball, k steps of size alpha, projection onto the
eps-ball and [0, 1] each step; PGD-20: eps = 8/255, alpha = 2/255 (torchattacks defaults to 10
steps: set here). Attacks are seeded: the attack runs inside a forked RNG state seeded with `seed`
(the official attacks also take it as their `seed`), so the same model, images and options give the
same robust error without disturbing the caller's random state.

Random draws, by the kind's `randomness` (attacks/spec.py): PGD's random starts are one stream from a CPU
generator seeded with the attack's seed, image after image in the images' order, each image's start drawn
in NHWC order and copied to the device (`StartsFrom`): the same starts on every device (CUDA's generator
output depends on the GPU model) and for every attack batch size. For images that fit in one batch these
are exactly the starts torchattacks drew on a CPU before (it fills a channels_last tensor in NHWC order
from the global generator seeded with the seed), so those records stand. The official attacks (APGD, FAB,
Square, AutoAttack) draw on the CPU already and are seeded per batch: seed + b for batch b.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from robustbench_ols.attacks.spec import AttackSpec
from robustbench_ols.common.device_random import cpu_generator, to_device


class ChannelsLastInput(torch.nn.Module):
    """`model` fed channels_last copies of its inputs: the official AutoAttack code reshapes input
    gradients with `.view`, which needs NCHW-contiguous inputs, while the model runs faster on
    channels_last ones (the gradient flows back through the copy in the input's layout)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.contiguous(memory_format=torch.channels_last))


class _Collect(logging.Handler):
    def __init__(self, into: list):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record):
        self.into.append(record.getMessage())


@contextmanager
def _collecting(messages: list | None):
    """Python warnings and AutoAttack's logger warnings go into `messages` (None: left alone)."""
    if messages is None:
        yield
        return
    logger, handler = logging.getLogger("auto-attack"), _Collect(messages)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        messages.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


class StartsFrom(TorchFunctionMode):
    """Inside it, an in-place uniform fill without a generator of its own (torchattacks' PGD random start,
    `torch.empty_like(x).uniform_(-eps, eps)`) is drawn from the CPU `generator` into a CPU tensor laid out
    NHWC (a 4-d one), then copied into the tensor on its device. Every other call passes through."""

    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not torch.Tensor.uniform_ or kwargs.get("generator") is not None:
            return func(*args, **kwargs)
        target, *bounds = args
        low = bounds[0] if bounds else kwargs.get("from", 0.0)
        high = bounds[1] if len(bounds) > 1 else kwargs.get("to", 1.0)
        layout = torch.channels_last if target.dim() == 4 else torch.contiguous_format
        cpu = torch.empty(target.shape, dtype=target.dtype, memory_format=layout)
        cpu.uniform_(low, high, generator=self.generator)
        return target.copy_(to_device(cpu, target.device))


def start_stream(spec: AttackSpec, seed: int) -> torch.Generator | None:
    """The CPU generator of an attack's per-image random starts over one set of images, or None when the
    attack's draws are seeded per batch (`AttackSpec.randomness`)."""
    return cpu_generator(seed) if spec.randomness == "per image" else None


def batch_starts(spec: AttackSpec, seed: int, per_image: bool = True):
    """b -> the start stream of attack batch b: one stream over every batch (`per_image`), else batch b's own,
    seeded seed + b (the rule of the records made before per-image starts)."""
    stream = start_stream(spec, seed) if per_image else None
    return (lambda b: stream) if per_image else (lambda b: start_stream(spec, seed + b))


def adversarial(model, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *, seed: int = 0,
                messages: list | None = None, starts: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial images for float x in [0, 1] (any memory format); the model's mode is restored.
    The attack's warnings go into `messages` instead of stderr when a list is given. `starts`: the stream
    of per-image random starts (`start_stream`), continued by the images of each call in turn."""
    was_training = model.training
    model.eval()
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    attacked = model
    if spec.needs_nchw and x.dim() == 4 and not x.is_contiguous():
        attacked, x = ChannelsLastInput(model).eval(), x.contiguous()
    try:
        with torch.random.fork_rng(devices=devices), _collecting(messages):
            torch.manual_seed(seed)
            if starts is None:
                return spec.perturb(attacked, x, y, seed)
            with StartsFrom(starts):
                return spec.perturb(attacked, x, y, seed)
    finally:
        model.train(was_training)


def fold_batchnorm(model, *, channels_last: bool = False):
    """An eval-mode copy of `model` whose batch norms are folded into the convolutions before them, or
    None when the model can't be traced by torch.fx (then attack the model itself).

    In eval mode a batch norm is a fixed per-channel affine map, so conv -> BN is one convolution with
    rescaled weights and a bias: the same function up to float rounding (logits within ~1e-6), with
    one memory-bound pass fewer forward and backward. The attack's 20 forward+backward passes are then
    about 1.15-1.2x faster on a CPU. Batch norms that follow something else (pre-activation blocks)
    stay as they are. `model` itself is not changed."""
    try:
        from torch.fx.experimental.optimization import fuse
        was_training = model.training
        model.eval()
        try:
            fused = fuse(model)  # a deep copy
        finally:
            model.train(was_training)
    except Exception:  # an untraceable model (data-dependent control flow), or a torch without fx fusion
        return None
    fused.eval()
    return fused.to(memory_format=torch.channels_last) if channels_last else fused


@dataclass
class Outcomes:
    """Image by image, in the order of the images: fooled (top-1 wrong on the adversarial image, which
    includes images already wrong without attack), top-k fooled when asked for, the attack's warnings."""
    fooled: torch.Tensor  # bool, on the CPU
    fooled_topk: torch.Tensor | None
    messages: list


def attack_outcomes(model, images: torch.Tensor, labels: torch.Tensor, spec: AttackSpec, *, seed: int = 0,
                    batch_size: int = 256, channels_last: bool = False, topk: int = 1,
                    fold_bn: bool = True, on_batch=None, per_image_starts: bool = True) -> Outcomes:
    """Attack uint8 `images` batch by batch; batch b's attack is seeded with seed + b and PGD's random starts
    are one stream over the images seeded with seed (`start_stream`), so a subset evaluated in the same order
    is reproducible, and PGD's outcomes do not depend on `batch_size` (`per_image_starts=False`: batch b's starts
    seeded seed + b, the rule of the records made before; still drawn on the CPU). `fold_bn`: attack (and
    classify) an eval-mode copy with the batch norms folded into the convolutions (`fold_batchnorm`; the same
    function, faster); `model` itself is left as it was. `on_batch(1)` is called after each attacked batch."""
    fooled, fooled_k, messages = [], [], []
    was_training = model.training
    model.eval()
    folded = fold_batchnorm(model, channels_last=channels_last) if fold_bn else None
    attacked = folded if folded is not None else model
    starts = batch_starts(spec, seed, per_image_starts)
    try:
        for b, i in enumerate(range(0, len(images), batch_size)):
            x = images[i:i + batch_size].float().div_(255)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = labels[i:i + batch_size]
            adv = adversarial(attacked, x, y, spec, seed=seed + b, messages=messages, starts=starts(b))
            with torch.no_grad():
                logits = attacked(adv)
            fooled.append((logits.argmax(1) != y).cpu())
            if topk > 1:
                fooled_k.append((~(logits.topk(topk, 1).indices == y[:, None]).any(1)).cpu())
            if on_batch is not None:
                on_batch(1)
    finally:
        model.train(was_training)
    cat = (lambda parts: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool))
    return Outcomes(cat(fooled), cat(fooled_k) if topk > 1 else None, list(dict.fromkeys(messages)))


def robust_error(model, images: torch.Tensor, labels: torch.Tensor, spec: AttackSpec, *, seed: int = 0,
                 batch_size: int = 256, channels_last: bool = False, topk: int = 1,
                 fold_bn: bool = True, on_batch=None, per_image_starts: bool = True) -> dict:
    """Top-1 (and top-`topk`) error of `model` on adversarial versions of uint8 `images`:
    {spec.key: err} plus {spec.key[:-4] + "_err_top5": ...} when topk = 5 (see `attack_outcomes`)."""
    out = attack_outcomes(model, images, labels, spec, seed=seed, batch_size=batch_size,
                          channels_last=channels_last, topk=topk, fold_bn=fold_bn, on_batch=on_batch,
                          per_image_starts=per_image_starts)
    return errors(spec, out, topk)


def errors(spec: AttackSpec, out: Outcomes, topk: int = 1) -> dict:
    """The record's figures for one attack's outcomes."""
    n = max(len(out.fooled), 1)
    res = {spec.key: out.fooled.double().sum().item() / n}
    if topk > 1:
        res[spec.key[:-len("_err")] + f"_err_top{topk}"] = out.fooled_topk.double().sum().item() / n
    return res
