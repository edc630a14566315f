"""Online Label Smoothing (Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SpecError
from .base import Method, soft_cross_entropy
from .registry import register


@register
class OLS(Method):
    """Soft labels S (K x K, row S[y] = the soft label of class y) learned from the model's own
    correct predictions.

    Loss: alpha * CE(z, y) + (1 - alpha) * (-sum_k S[y, k] log softmax(z)_k).
    Accumulation, from the training forward pass, detached: for each sample whose top-1 prediction
    equals its (noisy) label, A[y] += softmax(z), c[y] += 1 (index_add_, so repeated labels in a batch
    all count). At the end of each period S[y] = A[y] / c[y]; a class with no correct prediction
    gets the uniform row 1/K (the authors' code). Then A and c are reset.
    init: `uniform` S0 = 1/K (the paper) or `zeros` (the authors' CIFAR code: first period 0.5*CE).
    period: update S every `period` iterations; 0 = once per epoch (the paper).
    """
    name = "ols"
    citation = "Zhang et al., Delving Deep into Label Smoothing, IEEE TIP 30 (2021), arXiv 2011.12562"

    def __init__(self, *, alpha: float = 0.5, init: str = "uniform", period: int = 0):
        if not 0 <= alpha <= 1:
            raise SpecError(f"ols: alpha must be in [0, 1], got {alpha}")
        if init not in ("uniform", "zeros"):
            raise SpecError(f"ols: init must be uniform or zeros, got {init!r}")
        if period < 0:
            raise SpecError(f"ols: period must be >= 0 iterations (0 = one epoch), got {period}")
        self.alpha, self.init, self.period = alpha, init, period

    def setup(self, info):
        super().setup(info)
        k, dev = info.num_classes, info.device
        fill = 1.0 / k if self.init == "uniform" else 0.0
        self.S = torch.full((k, k), fill, device=dev)
        self.A = torch.zeros(k, k, device=dev)
        self.c = torch.zeros(k, device=dev)
        self.step = 0
        self._eye = torch.eye(k, device=dev)

    def loss(self, logits, batch, epoch):
        target = self.alpha * self._eye[batch.y] + (1 - self.alpha) * self.S[batch.y]
        return soft_cross_entropy(logits, target)

    def after_backward(self, batch, out):
        with torch.no_grad():
            logits = out.logits.detach().float()
            correct = (logits.argmax(1) == batch.y).float()
            # Multiplying by the mask instead of indexing with it avoids a host sync on the GPU.
            self.A.index_add_(0, batch.y, F.softmax(logits, 1) * correct[:, None])
            self.c.index_add_(0, batch.y, correct)
        self.step += 1
        if self.period and self.step % self.period == 0:
            self.update()

    def on_epoch_start(self, epoch, models):
        if not self.period and epoch > 0:
            self.update()

    def update(self):
        """S[y] = A[y] / c[y], uniform where c[y] = 0; reset the accumulators."""
        k = self.S.shape[0]
        mean = self.A / self.c.clamp_min(1)[:, None]
        self.S = torch.where(self.c[:, None] > 0, mean, torch.full_like(mean, 1.0 / k))
        self.A.zero_()
        self.c.zero_()

    def state_dict(self):
        return {"S": self.S.clone(), "A": self.A.clone(), "c": self.c.clone(), "step": self.step}

    def load_state_dict(self, state):
        dev = self.S.device
        self.S, self.A, self.c = (state[k].to(dev).clone() for k in ("S", "A", "c"))
        self.step = int(state["step"])
