"""Generalized label smoothing (Wei et al., ICML 2022): label smoothing whose rate may be negative.

loss = (1 - r) * CE(z, y) + r * mean_k(-log p_k), the authors' `loss_gls` (UCSC-REAL/negative-label-smoothing,
loss.py, with their defaults wa=0, wb=1). For 0 <= r < 1 this is exactly `ls:eps=r`, computed by the same call
(F.cross_entropy's label_smoothing), so `gls:rate=0.1` and `ls:eps=0.1` give bit-identical runs; r < 0 is
negative label smoothing (NLS), whose target gives every other class the weight r/K < 0. The paper's grid runs
r over 0.8 ... -8.0.

`warmup=E` trains the first E epochs with plain cross-entropy. The authors' high-noise recipe (main_warmup.py,
then main_GLS_load.py) is a CE model chosen by its test accuracy, then 100 epochs of GLS at lr 1e-6: choosing a
checkpoint on the test set is not reproduced; the default, warmup=0, is their direct training
(main_GLS_direct_train.py).
"""
from __future__ import annotations

import math

import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods.base import Method
from robustbench_ols.methods.registry import register


@register
class GeneralizedLabelSmoothing(Method):
    """(1 - rate) * CE + rate * mean_k(-log p_k); rate < 1, negative for NLS; CE alone for `warmup` epochs."""
    name = "gls"
    citation = ("Wei et al., To Smooth or Not? When Label Smoothing Meets Noisy Labels, ICML 2022 (rate in "
                "[0.8 ... -8.0]; rate < 0 is negative label smoothing; default rate=-0.2)")

    def __init__(self, *, rate: float = -0.2, warmup: int = 0):
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate < 1):
            raise SpecError(f"gls: rate must be a finite number < 1 (negative for negative label smoothing; "
                            f"at 1 the label's own weight is 0), got {rate!r}")
        if not (isinstance(warmup, int) and warmup >= 0):
            raise SpecError(f"gls: warmup must be a whole number of epochs >= 0, got {warmup!r}")
        self.rate, self.warmup = float(rate), warmup

    def loss(self, logits, batch, epoch):
        logits = logits.float()
        if epoch < self.warmup:
            return F.cross_entropy(logits, batch.y)
        if self.rate >= 0:  # the very call `ls` makes: the same numbers, not only the same formula
            return F.cross_entropy(logits, batch.y, label_smoothing=self.rate)
        logp = F.log_softmax(logits, dim=1)
        nll = -logp.gather(1, batch.y[:, None]).squeeze(1)
        return ((1 - self.rate) * nll - self.rate * logp.mean(1)).mean()
