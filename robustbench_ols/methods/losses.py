"""Methods that are a loss only: hard labels and label smoothing."""
from __future__ import annotations

import torch.nn.functional as F

from ..errors import SpecError
from .base import Method
from .registry import register


@register
class Hard(Method):
    """Cross-entropy with one-hot targets."""
    name = "hard"
    citation = "standard cross-entropy with one-hot labels"

    def loss(self, logits, batch, epoch):
        return F.cross_entropy(logits.float(), batch.y)


@register
class LabelSmoothing(Method):
    """q = (1-eps)*onehot + eps/K (Szegedy et al. 2016), or the gamma form: the target class gets
    gamma and every other class (1-gamma)/(K-1), i.e. eps = (1-gamma)*K/(K-1)."""
    name = "ls"
    citation = ("Szegedy et al., Rethinking the Inception Architecture, CVPR 2016 (eps form, default "
                "eps=0.1); gamma form: target gamma, (1-gamma)/(K-1) elsewhere, eps = (1-gamma)K/(K-1)")

    def __init__(self, *, eps: float | None = None, gamma: float | None = None):
        if eps is not None and gamma is not None:
            raise SpecError("ls takes eps or gamma, not both")
        if eps is not None and not 0 <= eps <= 1:
            raise SpecError(f"ls: eps must be in [0, 1], got {eps}")
        if gamma is not None and not 0 < gamma <= 1:  # the 1/K bound is checked in setup()
            raise SpecError(f"ls: gamma must be in (1/K, 1], got {gamma}")
        self.eps_given, self.gamma = eps, gamma

    def setup(self, info):
        super().setup(info)
        k = info.num_classes
        if self.gamma is not None:
            if not 1 / k < self.gamma <= 1:
                raise SpecError(f"ls: gamma must be in (1/K, 1] = ({1 / k:.4g}, 1], got {self.gamma}")
            self.eps = (1 - self.gamma) * k / (k - 1)
        else:
            self.eps = 0.1 if self.eps_given is None else self.eps_given

    def loss(self, logits, batch, epoch):
        return F.cross_entropy(logits.float(), batch.y, label_smoothing=self.eps)

    def options(self):
        eps = 0.1 if self.eps_given is None and self.gamma is None else self.eps_given
        return {"eps": eps, "gamma": self.gamma}
