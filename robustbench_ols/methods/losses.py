"""Methods that are a loss only: hard labels, label smoothing, and the OLS paper's loss baselines
(SCE, soft/hard bootstrapping, DisturbLabel, GCE)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustbench_ols.common.device_random import cpu_generator, to_device
from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods.base import Method
from robustbench_ols.methods.registry import register


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


# ---------------------------------------------------------------------------------------------------
# Loss-only baselines of the OLS paper: SCE, bootstrapping (soft and hard), DisturbLabel, GCE.
# ---------------------------------------------------------------------------------------------------

def method_generator(info, salt: int) -> torch.Generator:
    """A method's own CPU generator, seeded from the run seed and a per-method constant, so that its draws
    are independent of the trainer's (model init, shuffling, augmentation); its draws are copied to the
    device (`to_device`), so they are the same on every device (common/device_random.py)."""
    return cpu_generator(int(info.seed) * 1_000_003 + salt)


def _log_p_label(logits, y):
    """log softmax(z)_y per sample, float32."""
    return F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)


def _check_finite(method: str, option: str, value: float, lo: float | None = None,
                  hi: float | None = None, text: str = "") -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        raise SpecError(f"{method}: {option} must be {text}, got {value!r}")


# ln(1e-4): the official SCE code clamps the one-hot label to [1e-4, 1] before taking the log.
SCE_CODE_A = math.log(1e-4)  # -9.210340371976182


@register
class SCE(Method):
    """Symmetric Cross Entropy: L = alpha * CE(z, y) + beta * RCE(z, y), batch mean.

    RCE = -sum_k p_k log q_k with p = softmax(z) and q = onehot(y), where log 0 := A; since log 1 = 0
    this is exactly RCE = -A * (1 - p_y) (computed as A * expm1(log p_y), accurate when p_y ~ 1).

    Defaults (the SCE paper, also used by the OLS authors' code): CIFAR-100 alpha = 6.0, beta = 0.1;
    every other dataset (CIFAR-10, synthetic) alpha = 0.1, beta = 1.0. Give alpha/beta to override.
    A: the paper's A = -4 (default). The official code clamps q to [1e-4, 1] and takes the natural
    log, so its effective A = ln(1e-4) = -9.2103...: pass `A=code` (exactly ln 1e-4) or a number such
    as `A=-9.2103`; `A=paper` is -4. (The official code also clamps p to >= 1e-7 before its logs; that
    changes the loss by at most ~1e-7 per class and is not reproduced.)
    ce: `plain` (default: CE = -log p_y, the paper's and the current SCE repository's) or `clamped`: the
    CE term against the one-hot clamped to [1e-4, 1] as well, CE = -sum_k max(onehot_k, 1e-4) log max(p_k,
    1e-7) = -log p_y - 1e-4 sum_{k != y} log p_k, as in the OLS authors' own SCE baseline
    (cifar/scripts/loss_all_methods.py) and an older commit of the SCE repository. A different loss
    (REFERENCE.md: 9.200 vs 9.273 on the same logits, K = 10), kept so that the OLS paper's SCE row can be
    reproduced: `sce:ce=clamped,A=code`.
    """
    name = "sce"
    citation = ("Wang et al., Symmetric Cross Entropy for Robust Learning with Noisy Labels, ICCV 2019 "
                "(A=-4 as in the paper; A=code gives the official code's ln(1e-4))")

    DEFAULTS = {"cifar100": (6.0, 0.1), "other": (0.1, 1.0)}
    LATER_OPTIONS = {"ce": "plain"}  # the id rule (spec/ids.py): plain CE reproduces the sce runs recorded without it

    def __init__(self, *, alpha: float | None = None, beta: float | None = None,
                 A: float | str = -4.0, ce: str = "plain"):
        for opt, v in (("alpha", alpha), ("beta", beta)):
            if v is not None:
                _check_finite("sce", opt, v, lo=0.0, text="a finite number >= 0")
        if alpha is not None and beta is not None and alpha == 0 and beta == 0:
            raise SpecError("sce: alpha and beta must not both be 0 (the loss would be 0)")
        if isinstance(A, str):
            if A not in ("paper", "code"):
                raise SpecError(f"sce: A must be a number < 0, `paper` (-4) or `code` (ln 1e-4 = "
                                f"{SCE_CODE_A:.4f}), got {A!r}")
            A_value = -4.0 if A == "paper" else SCE_CODE_A
        else:
            ok = isinstance(A, (int, float)) and math.isfinite(A) and A < 0
            if not ok:
                raise SpecError(f"sce: A (the value of log 0) must be a finite number < 0, `paper` or "
                                f"`code`, got {A!r}")
            A_value = float(A)
        if ce not in ("plain", "clamped"):
            raise SpecError(f"sce: ce must be plain (CE = -log p_y) or clamped (the OLS authors' CE against the "
                            f"one-hot clamped to [1e-4, 1]), got {ce!r}")
        self.alpha_given, self.beta_given, self.A, self.ce = alpha, beta, A_value, ce

    def setup(self, info):
        super().setup(info)
        key = "cifar100" if str(info.dataset).startswith("cifar100") else "other"
        a0, b0 = self.DEFAULTS[key]
        self.alpha = a0 if self.alpha_given is None else float(self.alpha_given)
        self.beta = b0 if self.beta_given is None else float(self.beta_given)

    def rce(self, logits, y):
        """Per-sample RCE = -A * (1 - p_y)."""
        return self.A * torch.expm1(_log_p_label(logits, y))

    def loss(self, logits, batch, epoch):
        logp_y = _log_p_label(logits, batch.y)
        ce = -logp_y if self.ce == "plain" else self.clamped_ce(logits, batch.y)
        return (self.alpha * ce + self.beta * self.A * torch.expm1(logp_y)).mean()

    @staticmethod
    def clamped_ce(logits, y):
        """Per-sample -sum_k max(onehot_k, 1e-4) log max(p_k, 1e-7) (the OLS authors' SCE CE term)."""
        logp = F.log_softmax(logits.float(), dim=1).clamp_min(math.log(1e-7))
        q = F.one_hot(y, logits.shape[1]).float().clamp_min(1e-4)
        return -(q * logp).sum(1)

    def effective_options(self):
        return {"alpha": self.alpha, "beta": self.beta, "A": self.A, "ce": self.ce}


class _Bootstrap(Method):
    """Reed et al. bootstrapping: cross-entropy against beta * onehot(y) + (1 - beta) * t(p)."""

    def __init__(self, *, beta: float, detach: bool = True):
        _check_finite(self.name, "beta", beta, lo=0.0, hi=1.0, text="in [0, 1]")
        if not isinstance(detach, bool):
            raise SpecError(f"{self.name}: detach must be true or false, got {detach!r}")
        self.beta, self.detach = float(beta), detach

    def prediction_target(self, logits):
        raise NotImplementedError

    def loss(self, logits, batch, epoch):
        logits = logits.float()
        logp = F.log_softmax(logits, dim=1)
        onehot = F.one_hot(batch.y, logits.shape[1]).to(logp.dtype)
        t = self.prediction_target(logits.detach() if self.detach else logits)
        target = self.beta * onehot + (1 - self.beta) * t
        return -(target * logp).sum(1).mean()


@register
class BootSoft(_Bootstrap):
    """Soft bootstrapping: target = beta * onehot(y) + (1 - beta) * p, p = softmax(z), beta = 0.95.

    detach=true (default, as Arazo et al.): p in the target is a constant, so the gradient is that of
    a cross-entropy against a fixed target. detach=false (the SCE and OLS authors' code): the gradient
    also flows through p in the target (the entropy-like term -(1-beta) sum p log p)."""
    name = "bootsoft"
    citation = ("Reed et al., Training Deep Neural Networks on Noisy Labels with Bootstrapping, "
                "ICLR workshop 2015 (soft, beta=0.95)")

    def __init__(self, *, beta: float = 0.95, detach: bool = True):
        super().__init__(beta=beta, detach=detach)

    def prediction_target(self, logits):
        return F.softmax(logits, dim=1)


@register
class BootHard(_Bootstrap):
    """Hard bootstrapping: target = beta * onehot(y) + (1 - beta) * onehot(argmax p), beta = 0.8.

    argmax has no gradient, so `detach` changes nothing here; it is kept for symmetry with bootsoft."""
    name = "boothard"
    citation = ("Reed et al., Training Deep Neural Networks on Noisy Labels with Bootstrapping, "
                "ICLR workshop 2015 (hard, beta=0.8)")

    def __init__(self, *, beta: float = 0.8, detach: bool = True):
        super().__init__(beta=beta, detach=detach)

    def prediction_target(self, logits):
        return F.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)


@register
class DisturbLabel(Method):
    """Each iteration each label is replaced, with probability alpha * (K-1)/K, by a class drawn
    uniformly from the K-1 OTHER classes; the loss is the CE against the disturbed labels. This is
    the same distribution as "with probability alpha, resample the label uniformly over all K classes"
    (which may keep it). Draws come from the method's own generator (seeded from the run seed), whose
    state is checkpointed, so a resumed run draws exactly what an uninterrupted one would."""
    name = "disturblabel"
    citation = "Xie et al., DisturbLabel: Regularizing CNN on the Loss Layer, CVPR 2016 (alpha=0.1)"
    SALT = 0xD157AB

    def __init__(self, *, alpha: float = 0.1):
        _check_finite("disturblabel", "alpha", alpha, lo=0.0, hi=1.0, text="in [0, 1]")
        self.alpha = float(alpha)

    def setup(self, info):
        super().setup(info)
        self.generator = method_generator(info, self.SALT)

    def disturb(self, y: torch.Tensor) -> torch.Tensor:
        """New labels for `y` (a fixed number of draws per call, no host synchronisation)."""
        k = self.info.num_classes
        u = to_device(torch.rand(y.shape, generator=self.generator), y.device)
        shift = to_device(torch.randint(1, k, y.shape, generator=self.generator), y.device) if k > 1 \
            else torch.zeros_like(y)
        flip = u < self.alpha * (k - 1) / k
        return torch.where(flip, (y + shift) % k, y)

    def loss(self, logits, batch, epoch):
        return F.cross_entropy(logits.float(), self.disturb(batch.y))

    def state_dict(self):
        return {"generator": self.generator.get_state().clone()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"].cpu().clone())


@register
class GCE(Method):
    """Generalised cross-entropy: mean of (1 - p_y^q) / q, q in (0, 1]; q -> 0 gives CE, q = 1 MAE
    (up to a factor). Computed as -expm1(q log p_y) / q, accurate for small q."""
    name = "gce"
    citation = ("Zhang & Sabuncu, Generalized Cross Entropy Loss for Training Deep Neural Networks "
                "with Noisy Labels, NeurIPS 2018 (q=0.7)")

    def __init__(self, *, q: float = 0.7):
        ok = isinstance(q, (int, float)) and math.isfinite(q) and 0 < q <= 1
        if not ok:
            raise SpecError(f"gce: q must be in (0, 1], got {q!r}")
        self.q = float(q)

    def loss(self, logits, batch, epoch):
        return (-torch.expm1(self.q * _log_p_label(logits, batch.y)) / self.q).mean()
