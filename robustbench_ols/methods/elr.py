"""Early-learning regularization, ELR (Liu et al., NeurIPS 2020); not ELR+ (two networks, mixup, weight averaging).

Per sample i a target t_i, the temporal ensemble of the model's own predictions: each time i is in a batch,
t_i <- beta * t_i + (1 - beta) * p_i / sum(p_i), with p = softmax(z) clamped to [1e-4, 1 - 1e-4] and detached;
t starts at 0. loss = CE(z, y) + lam * mean_i log(1 - <t_i, p_i>) (p clamped as above, with its gradient).
The regulariser pulls p towards the early-learning targets, so the wrong labels are not memorised.

Defaults are the authors' published configurations (shengliu66/ELR, ELR/config_cifar10.json and
config_cifar100.json): CIFAR-10 beta 0.7, lambda 3; CIFAR-100 beta 0.9, lambda 7; every other dataset takes
CIFAR-10's. Their optimiser and schedule (SGD lr 0.02, wd 1e-3, cosine restarts, 150 epochs) are the trainer's
business here: the spec's schedule is used and recorded, so the comparison with the other methods is like for
like.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods.base import Method
from robustbench_ols.methods.registry import register

CLAMP = 1e-4  # the authors' clamp of p before both the target update and the regulariser


@register
class ELR(Method):
    """CE + lam * mean log(1 - <t_i, p_i>), t_i the per-sample moving average (beta) of the predictions."""
    name = "elr"
    citation = ("Liu et al., Early-Learning Regularization Prevents Memorization of Noisy Labels, NeurIPS 2020 "
                "(the authors' configs: CIFAR-10 beta=0.7, lam=3; CIFAR-100 beta=0.9, lam=7)")
    DEFAULTS = {"cifar100": (0.9, 7.0), "other": (0.7, 3.0)}

    def __init__(self, *, beta: float | None = None, lam: float | None = None):
        if beta is not None and not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise SpecError(f"elr: beta (the targets' momentum) must be in [0, 1), got {beta!r}")
        if lam is not None and not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise SpecError(f"elr: lam (the regulariser's weight) must be a finite number >= 0, got {lam!r}")
        self.beta_given, self.lam_given = beta, lam

    def setup(self, info):
        super().setup(info)
        b0, l0 = self.DEFAULTS["cifar100" if str(info.dataset).startswith("cifar100") else "other"]
        self.beta = b0 if self.beta_given is None else float(self.beta_given)
        self.lam = l0 if self.lam_given is None else float(self.lam_given)
        self.target = torch.zeros(info.num_train, info.num_classes, device=info.device)

    def loss(self, logits, batch, epoch):
        logits = logits.float()
        p = F.softmax(logits, dim=1).clamp(CLAMP, 1 - CLAMP)
        with torch.no_grad():
            q = p / p.sum(1, keepdim=True)
            # a sample twice in one batch (not with the trainer's permutation) would keep its last update
            self.target[batch.index] = self.beta * self.target[batch.index] + (1 - self.beta) * q
        reg = torch.log1p(-(self.target[batch.index] * p).sum(1)).mean()
        return F.cross_entropy(logits, batch.y) + self.lam * reg

    def state_dict(self):
        return {"target": self.target.clone()}

    def load_state_dict(self, state):
        self.target = state["target"].to(self.info.device, torch.float32).clone()

    def effective_options(self):
        return {"beta": self.beta, "lam": self.lam}
