"""Co-teaching (Han et al., NeurIPS 2018): two networks teach each other with their small-loss samples."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods.base import Method, StepOutput
from robustbench_ols.methods.registry import register


@register
class CoTeaching(Method):
    """Two networks; each is trained on the samples its PEER considers clean.

    Forget rate, with e the 0-based epoch: tau(e) = tau * min(e / tk, 1). So epoch 0 keeps every
    sample, epoch e < tk forgets tau*e/tk, and every epoch from tk on forgets tau (tk = 10: epoch 5
    forgets tau/2, epoch 10 and later tau; tk = 0: tau from the start). This is the paper's
    R(T) = 1 - min(T*tau/T_k, tau) with T counted from 0. (The authors' code fills the first T_k
    entries with linspace(0, tau, T_k), i.e. tau*e/(T_k-1), and starts training at its entry 1.)

    Each step: both networks run on batch.x; each ranks the batch by its OWN per-sample CE against
    the noisy label and keeps the n = round_half_up((1 - tau(e)) * B) smallest (at least 1; `topk`,
    a count fixed from Python numbers: no host synchronisation). Network 1 is trained on the samples
    network 2 kept, and vice versa:
        loss = mean_{i in kept_2} CE(z1_i, y_i) + mean_{i in kept_1} CE(z2_i, y_i),
    a plain mean over the n kept samples (the authors' code divides that mean by n once more: not
    copied). The trainer's one optimiser covers the parameters of both networks; each term only
    reaches its own network.

    Evaluation and the training statistics use network 1 (models[0]); both are checkpointed.
    tau defaults to the spec's noise rate (the rate asked for, not the realised one); for human
    noise it is unknown and must be given.

    Diagnostic state: `dropped` (N,) int32 counts, per training sample, how often network 1's
    selection dropped it during the current (or, after training, the last) epoch; reset at every
    epoch start. Its precision against the noise mask says whether the forgotten samples are noisy.
    """
    name = "coteaching"
    citation = ("Han et al., Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy "
                "Labels, NeurIPS 2018, arXiv 1804.06872")
    num_models = 2

    def __init__(self, *, tau: float | None = None, tk: int = 10):
        if tau is not None and not 0 <= tau < 1:
            raise SpecError(f"coteaching: option tau (the final forget rate) must be in [0, 1), got {tau}")
        if tk < 0:
            raise SpecError(f"coteaching: option tk (epochs of the forget-rate ramp) must be >= 0, got {tk}")
        self.tau_given, self.tk = tau, tk

    def setup(self, info):
        super().setup(info)
        tau = self.tau_given
        if tau is None:
            if info.noise_rate is None:
                raise SpecError("coteaching: option tau (the forget rate) defaults to the spec's noise rate, "
                                "which is unknown for human noise; give it in [0, 1), e.g. "
                                "--method coteaching:tau=0.2")
            tau = float(info.noise_rate)
            if not 0 <= tau < 1:
                raise SpecError(f"coteaching: the noise rate {tau} is not a valid forget rate in [0, 1); "
                                "give one with --method coteaching:tau=...")
        self.tau = tau
        self.dropped = torch.zeros(info.num_train, dtype=torch.int32, device=info.device)

    def forget_rate(self, epoch: int) -> float:
        """tau(e) = tau * min(e / tk, 1) for the 0-based epoch e."""
        if self.tk == 0:
            return self.tau
        return self.tau * min(epoch / self.tk, 1.0)

    def num_kept(self, batch_size: int, epoch: int) -> int:
        """round((1 - tau(e)) * B), halves rounded up, at least 1."""
        return min(batch_size, max(1, math.floor((1 - self.forget_rate(epoch)) * batch_size + 0.5)))

    def on_epoch_start(self, epoch, models):
        self.dropped.zero_()

    def training_step(self, models, batch, epoch):
        net1, net2 = models
        z1, z2 = net1(batch.x), net2(batch.x)
        l1 = F.cross_entropy(z1.float(), batch.y, reduction="none")
        l2 = F.cross_entropy(z2.float(), batch.y, reduction="none")
        n = self.num_kept(len(batch.y), epoch)
        kept1 = torch.topk(l1.detach(), n, largest=False, sorted=False).indices  # net 1's small-loss set
        kept2 = torch.topk(l2.detach(), n, largest=False, sorted=False).indices
        loss = l1[kept2].mean() + l2[kept1].mean()  # each network learns from its peer's selection
        with torch.no_grad():
            drop = torch.ones(len(batch.y), dtype=torch.int32, device=l1.device)
            drop.index_fill_(0, kept1, 0)
            self.dropped.index_add_(0, batch.index, drop)
        return StepOutput(loss, z1)

    def state_dict(self):
        return {"dropped": self.dropped.clone()}

    def load_state_dict(self, state):
        self.dropped = state["dropped"].to(self.info.device, torch.int32).clone()

    def effective_options(self):
        opts = self.options()
        if hasattr(self, "tau"):
            opts["tau"] = self.tau
        return opts
