"""Online Label Smoothing (Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_ols.common.device_random import to_device
from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods.base import Method, soft_cross_entropy
from robustbench_ols.methods.losses import method_generator
from robustbench_ols.methods.registry import register


@register
class OLS(Method):
    """Soft labels S (K x K, row S[y] = the soft label of class y) learned from the model's own
    correct predictions.

    Loss: alpha * CE(z, y) + (1 - alpha) * (-sum_k S[y, k] log softmax(z)_k).
    Accumulation, from the training forward pass, detached: for each sample whose top-1 prediction
    equals its (noisy) label, A[y] += softmax(z), c[y] += 1 (index_add_, so repeated labels in a batch
    all count). Divergence: the paper's Algorithm 1 pseudo-code accumulates the prediction of every
    sample, while its prose (before Eq. 5) and the authors' code accumulate the correctly classified
    ones only; this follows the prose and the code. At the end of each period S[y] = A[y] / c[y]; a class with no correct prediction
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


@register
class OLSSingle(OLS):
    """OLS-Single, the OLS paper's sample-level ablation (Sec. "Sample-level soft labels": "for each
    training sample, we randomly select another training sample with the same category [and] utilize
    [its predictive distribution] as the soft label"; 26.18 vs 25.24 error for OLS, CIFAR-100
    ResNet-56). The paper gives no code for it; what is implemented:

    Loss exactly as OLS: alpha * CE(z, y) + (1 - alpha) * (-sum_k T_i,k log softmax(z)_k), alpha = 0.5,
    where the soft label T_i comes from the previous period's (epoch's) correctly predicted samples
    instead of their class mean. As in OLS, "correct" means top-1 prediction == the (noisy) label,
    the predictions are the detached softmax of the training forward pass (training mode, augmented
    input), the first period uses S0 (`init`: uniform 1/K, the paper, or zeros), and a class without
    any usable correct sample gets the uniform soft label 1/K.

    draw=class: one sample per class and period (a cheaper, coarser reading). During the period, per class, ONE correct
    prediction is kept, chosen uniformly at random among all of the period's correct predictions of
    that class: each correct sample gets an independent random 62-bit key from the method's
    generator and, per class, the prediction with the largest key so far is kept (reservoir sampling
    by random keys, vectorised per batch with scatter_reduce; ties broken by batch position). At the
    end of the period S[y] = that prediction, so every sample of class y is supervised by the same
    single other sample's prediction for the whole next period (S[y] is exactly one stored vector,
    not a mean). "Other" holds except with probability ~1/(number of correct samples of the class).

    draw=sample (default, the paper's text: "for each training sample, we randomly select another
    training sample with the same category"): the literal per-sample reading. Every training sample's latest prediction in the
    period is stored (N x K memory); at the end of the period the correct ones form a pool per class.
    At each iteration, each sample i of class y draws, independently and uniformly, one pool member
    of class y other than i itself (from the method's generator) and uses its stored prediction; if
    the pool has no other member, the uniform label.

    period: as OLS (0 = once per epoch). The generator is seeded from the run seed and a constant;
    its state and all stored predictions are in state_dict, so a resumed run equals an uninterrupted one.
    """
    name = "ols-single"
    citation = ("Zhang et al., Delving Deep into Label Smoothing, IEEE TIP 30 (2021), sample-level "
                "ablation OLS-Single (soft label = one random other correct sample's prediction)")
    SALT = 0x0515_1E

    def __init__(self, *, alpha: float = 0.5, init: str = "uniform", period: int = 0,
                 draw: str = "sample"):
        if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            raise SpecError(f"ols-single: alpha must be in [0, 1], got {alpha}")
        if init not in ("uniform", "zeros"):
            raise SpecError(f"ols-single: init must be uniform or zeros, got {init!r}")
        if not (isinstance(period, int) and period >= 0):
            raise SpecError(f"ols-single: period must be >= 0 iterations (0 = one epoch), got {period}")
        if draw not in ("class", "sample"):
            raise SpecError(f"ols-single: draw must be class (one sample per class and period) or "
                            f"sample (a fresh other sample per training sample), got {draw!r}")
        super().__init__(alpha=alpha, init=init, period=period)
        self.draw = draw

    def setup(self, info):
        super().setup(info)
        del self.A, self.c  # OLS's class-mean accumulators are not used
        k, n, dev = info.num_classes, info.num_train, info.device
        self.generator = method_generator(info, self.SALT)
        self._uniform = torch.full((k,), 1.0 / k, device=dev)
        if self.draw == "class":
            self.best_key = torch.full((k,), -1, dtype=torch.long, device=dev)
            self.best_pred = torch.zeros(k, k, device=dev)
        else:
            self.labels = info.noisy_labels.to(dev).long()
            self.P = torch.zeros(n, k, device=dev)  # this period's latest prediction per sample
            self.seen_correct = torch.zeros(n, dtype=torch.bool, device=dev)
            self.pooled = False  # True once a period has ended (before: S0)
            self.pool = torch.zeros(n, k, device=dev)  # last period's predictions, grouped by class
            self.pool_count = torch.zeros(k, dtype=torch.long, device=dev)  # correct ones per class
            self.pool_offset = torch.zeros(k, dtype=torch.long, device=dev)  # class block starts
            self.pool_rank = torch.zeros(n, dtype=torch.long, device=dev)  # a sample's pool position
            self.pool_self = torch.zeros(n, dtype=torch.bool, device=dev)  # is the sample in the pool

    # -- the loss -------------------------------------------------------------------------------
    def loss(self, logits, batch, epoch):
        if self.draw == "class" or not self.pooled:
            return super().loss(logits, batch, epoch)  # alpha*onehot + (1-alpha)*S[y]
        return soft_cross_entropy(logits, self.alpha * self._eye[batch.y]
                                  + (1 - self.alpha) * self.sample_soft_labels(batch.y, batch.index))

    def sample_soft_labels(self, y, index):
        """draw=sample: for each sample, the stored prediction of a uniformly drawn other pool member
        of its class (uniform 1/K where there is none)."""
        me = self.pool_self[index]
        n_other = self.pool_count[y] - me.long()
        u = to_device(torch.rand(y.shape, generator=self.generator), y.device)
        j = torch.minimum((u * n_other).long(), (n_other - 1).clamp_min(0))
        j = j + (me & (j >= self.pool_rank[index])).long()  # skip the sample itself
        row = (self.pool_offset[y] + j).clamp_max(self.pool.shape[0] - 1)
        return torch.where((n_other > 0)[:, None], self.pool[row], self._uniform)

    # -- collecting this period's correct predictions ----------------------------------------------
    def after_backward(self, batch, out):
        with torch.no_grad():
            logits = out.logits.detach().float()
            y = batch.y
            p = F.softmax(logits, 1)
            correct = logits.argmax(1) == y
            if self.draw == "class":
                self._keep_one_per_class(y, p, correct)
            else:
                self.P.index_copy_(0, batch.index, p)
                self.seen_correct.index_copy_(0, batch.index, correct)
        self.step += 1
        if self.period and self.step % self.period == 0:
            self.update()

    def _keep_one_per_class(self, y, p, correct):
        """Reservoir sampling by random keys: per class keep the correct prediction whose key is the
        largest seen this period (uniform over the period's correct predictions of the class)."""
        k, b = self.S.shape[0], y.shape[0]
        key = to_device(torch.randint(0, 2 ** 62, y.shape, generator=self.generator), y.device)
        key = torch.where(correct, key, torch.full_like(key, -1))
        batch_max = torch.full((k,), -1, dtype=torch.long, device=y.device).scatter_reduce(
            0, y, key, "amax")
        top = correct & (key == batch_max[y])
        pos = torch.where(top, torch.arange(b, device=y.device), torch.full_like(y, b))
        first = torch.full((k,), b, dtype=torch.long, device=y.device).scatter_reduce(0, y, pos, "amin")
        take = batch_max > self.best_key  # a class with no correct sample here has batch_max = -1
        self.best_pred = torch.where(take[:, None], p[first.clamp_max(b - 1)], self.best_pred)
        self.best_key = torch.where(take, batch_max, self.best_key)

    def update(self):
        """End of a period: draw=class sets S[y] = the kept prediction (uniform if none); draw=sample
        builds the per-class pools of correct predictions. Then the collectors are reset."""
        if self.draw == "class":
            has = self.best_key >= 0
            self.S = torch.where(has[:, None], self.best_pred, self._uniform.expand_as(self.S))
            self.best_key = torch.full_like(self.best_key, -1)
            self.best_pred = torch.zeros_like(self.best_pred)
            return
        k, n = self.S.shape[0], self.labels.shape[0]
        labels, corr = self.labels, self.seen_correct
        # Sort by (class, correct first): class y's correct samples are pool[offset[y] : offset[y] + count[y]].
        order = torch.argsort(labels * 2 + (~corr).long(), stable=True)
        zeros = torch.zeros(k, dtype=torch.long, device=labels.device)  # (bincount syncs on a GPU)
        sizes = zeros.index_add(0, labels, torch.ones_like(labels))
        self.pool_offset = torch.cumsum(sizes, 0) - sizes
        self.pool_count = zeros.index_add(0, labels, corr.long())
        position = torch.empty_like(order)
        position[order] = torch.arange(n, device=labels.device)
        self.pool_rank = position - self.pool_offset[labels]
        self.pool = self.P[order]
        self.pool_self = corr.clone()
        self.seen_correct = torch.zeros_like(corr)
        self.pooled = True

    # -- checkpointing -------------------------------------------------------------------------------
    _CLASS_STATE = ("S", "best_key", "best_pred")
    _SAMPLE_STATE = ("S", "P", "seen_correct", "pool", "pool_count", "pool_offset", "pool_rank",
                     "pool_self")

    def state_dict(self):
        names = self._CLASS_STATE if self.draw == "class" else self._SAMPLE_STATE
        state = {name: getattr(self, name).clone() for name in names}
        state.update(step=self.step, generator=self.generator.get_state().clone())
        if self.draw == "sample":
            state["pooled"] = self.pooled
        return state

    def load_state_dict(self, state):
        dev = self.S.device
        names = self._CLASS_STATE if self.draw == "class" else self._SAMPLE_STATE
        for name in names:
            setattr(self, name, state[name].to(dev).clone())
        self.step = int(state["step"])
        self.generator.set_state(state["generator"].cpu().clone())
        if self.draw == "sample":
            self.pooled = bool(state["pooled"])
