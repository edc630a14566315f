"""Arazo et al., "Unsupervised Label Noise Modeling and Loss Correction", ICML 2019: M-DYR-H (mixup
with dynamic hard bootstrapping guided by a per-epoch beta mixture of the per-sample losses)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_ols.common.device_random import cpu_generator, to_device
from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods.base import Method, StepOutput
from robustbench_ols.methods.bmm import bmm_posterior, fit_bmm
from robustbench_ols.methods.registry import register

# The authors' schedule: plain mixup for epochs 1..105 of 300, bootstrapping from epoch 106 (1-based).
WARMUP_FRACTION = 105 / 300


def class_balance_reg(logits: torch.Tensor) -> torch.Tensor:
    """sum_c (1/K) log((1/K) / mean_batch p_c): KL(uniform || mean prediction), float32."""
    k = logits.shape[1]
    mean_p = F.softmax(logits.float(), dim=1).mean(0)
    return ((1.0 / k) * torch.log((1.0 / k) / mean_p)).sum()


def bootstrap_mixup_loss(logits: torch.Tensor, y: torch.Tensor, z: torch.Tensor, w: torch.Tensor,
                         lam: float, perm: torch.Tensor | None) -> torch.Tensor:
    """lam * [(1 - w) CE(out, y) + w CE(out, z)] + (1 - lam) * [the same with y, z, w permuted],
    each term a batch mean (the authors' sum / B), float32.

    logits: the model on the mixed input lam * x + (1 - lam) * x[perm]; y: the noisy labels, z: the
    argmax of the detached prediction on the un-mixed x, w: the posterior of the noisy component,
    all in the un-permuted order. perm=None (or lam=1) is the loss without mixup; w = 0 gives the
    mixup cross-entropy against the labels, w = 1 the mixup cross-entropy against z."""
    logp = F.log_softmax(logits.float(), dim=1)
    w = w.float()

    def term(yy, zz, ww):
        nll_y = -logp.gather(1, yy[:, None]).squeeze(1)
        nll_z = -logp.gather(1, zz[:, None]).squeeze(1)
        return ((1 - ww) * nll_y + ww * nll_z).mean()

    a = term(y, z, w)
    if perm is None:
        return a
    return lam * a + (1 - lam) * term(y[perm], z[perm], w[perm])


@register
class Arazo(Method):
    """M-DYR-H (Arazo et al. 2019).

    Warm-up (the first `warmup` epochs; default round(105/300 * epochs), the authors' 105 of 300):
    plain mixup cross-entropy, lam ~ Beta(mixup, mixup). Afterwards, at the start of each epoch the
    per-sample CE of models[0] against the noisy labels on the whole training set (`info.scan`: eval
    mode, no augmentation) is fitted with a two-component beta mixture (`bmm.fit_bmm`: 5-95th
    percentile trim and normalisation, 10 EM iterations) and w_i = P(noisy component | loss_i),
    clamped to [1e-4, 1 - 1e-4], is kept for the epoch. Each step then minimises
      lam [(1 - w_a) CE(out, y_a) + w_a CE(out, z_a)] + (1 - lam) [(1 - w_b) CE(out, y_b) + w_b CE(out, z_b)]
      + reg * sum_c (1/K) log((1/K) / mean_batch p_c)
    with z = argmax of the prediction on the un-mixed batch (a no-grad forward, train mode, as the
    authors do) and p the softmax of the mixed output.

    Options
    - mixup: alpha of the Beta(alpha, alpha) mixing coefficient, 32 (paper and code). mixup=0 is the
      variant without mixup (DYR-H): plain CE warm-up, then the same bootstrapped loss and
      regulariser on the un-mixed batch, one forward per step.
    - warmup: epochs of warm-up; default (None) round(105/300 * epochs).
    - reg: weight of the class-balance regulariser, 1.0: the authors' M-DYR-H command
      (RunScripts.sh, `--reg-term 1.0`; train.py's own default is 0). Not applied during warm-up.

    Choices where the authors' code differs (documented, not options):
    - The authors recompute w every batch from the current model (eval mode, augmented batch) looked
      up in a 100-point table of the mixture fitted after the previous epoch; here w is computed
      once per epoch from the scan, so the step does no extra eval-mode forward and no host sync.
    - The authors' loss scan runs on augmented images; `info.scan` uses the un-augmented ones
      (REFERENCE: eval mode, the training set).
    - The extra no-grad forward on the un-mixed batch runs in train mode, so batch-norm running
      statistics see the clean and the mixed batch each step (as in the authors' bootstrapping
      phase). It is also done during warm-up (the authors have none there) because its logits are
      what the trainer's statistics need (`StepOutput.logits`, models[0] on the un-mixed batch).

    Randomness: lam from a numpy Generator and the mixing permutation from a torch CPU Generator (copied to
    the device, so the same on every device), both seeded from `info.seed` and saved in `state_dict()`.
    """
    name = "arazo"
    citation = ("Arazo, Ortego, Albert, O'Connor, McGuinness, Unsupervised Label Noise Modeling and "
                "Loss Correction, ICML 2019, arXiv 1904.11238")

    def __init__(self, *, mixup: float = 32.0, warmup: int | None = None, reg: float = 1.0):
        if not mixup >= 0:
            raise SpecError(f"arazo: mixup (the Beta alpha; 0 = no mixup) must be >= 0, got {mixup}")
        if warmup is not None and warmup < 0:
            raise SpecError(f"arazo: warmup must be >= 0 epochs (or none for round(105/300 * epochs)), "
                            f"got {warmup}")
        if not reg >= 0:
            raise SpecError(f"arazo: reg must be >= 0, got {reg}")
        self.mixup, self.warmup, self.reg = float(mixup), warmup, float(reg)

    def setup(self, info):
        super().setup(info)
        self.warmup_epochs = (self.warmup if self.warmup is not None
                              else int(round(WARMUP_FRACTION * info.epochs)))
        self.gen = cpu_generator(info.seed * 1_000_003 + 0xA2A20)  # draws copied to the device
        self.rng = np.random.Generator(np.random.PCG64([info.seed, 0xA2A20]))
        self.w = None  # (N,) float32 on the device, after the first fit
        self.fit = None  # the last BMMFit's parameters (dict), for the record

    def effective_options(self):
        return {**self.options(), "mixup": self.mixup, "reg": self.reg, "warmup": self.warmup_epochs}

    def bootstrapping(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs

    def on_epoch_start(self, epoch, models):
        if self.bootstrapping(epoch):
            self.update_weights(models[0])

    def update_weights(self, model) -> None:
        """Scan the training set, fit the mixture, keep w (N,) = P(noisy | loss) on the device."""
        info = self.info
        if info.train_images is None:
            raise RuntimeError("arazo needs info.train_images to scan the training set")
        logits = info.scan(model)
        losses = F.cross_entropy(logits, info.noisy_labels, reduction="none")
        fit = fit_bmm(losses)  # per-epoch host sync is fine
        w = bmm_posterior(fit, losses)
        self.w = torch.as_tensor(w, dtype=torch.float32).to(info.device)
        self.fit = fit.as_dict()

    def draw(self, n: int) -> tuple[float, torch.Tensor]:
        """(lam, perm) for one mixup step."""
        lam = float(self.rng.beta(self.mixup, self.mixup))
        perm = to_device(torch.randperm(n, generator=self.gen), self.info.device)
        return lam, perm

    def training_step(self, models, batch, epoch):
        model, x, y = models[0], batch.x, batch.y
        boot = self.bootstrapping(epoch)
        if boot and self.w is None:
            raise RuntimeError(f"arazo: epoch {epoch} bootstraps but no mixture was fitted; "
                               "on_epoch_start must run first")
        if self.mixup == 0:  # DYR-H without mixup: one forward
            logits = model(x)
            if not boot:
                return StepOutput(F.cross_entropy(logits.float(), y), logits)
            z = logits.detach().argmax(1)
            loss = bootstrap_mixup_loss(logits, y, z, self.w[batch.index], 1.0, None)
            return StepOutput(loss + self.reg * class_balance_reg(logits), logits)
        with torch.no_grad():
            clean_logits = model(x)  # un-mixed input: z, and the trainer's statistics
        lam, perm = self.draw(len(y))
        mixed = lam * x + (1 - lam) * x[perm]
        if self.info.channels_last:
            mixed = mixed.contiguous(memory_format=torch.channels_last)
        out = model(mixed)
        if not boot:
            logp = F.log_softmax(out.float(), dim=1)
            loss = lam * F.nll_loss(logp, y) + (1 - lam) * F.nll_loss(logp, y[perm])
            return StepOutput(loss, clean_logits)
        z = clean_logits.argmax(1)
        loss = bootstrap_mixup_loss(out, y, z, self.w[batch.index], lam, perm)
        return StepOutput(loss + self.reg * class_balance_reg(out), clean_logits)

    def state_dict(self):
        return {"w": None if self.w is None else self.w.clone(), "fit": self.fit,
                "gen": self.gen.get_state(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        w = state["w"]
        self.w = None if w is None else w.to(self.info.device).clone()
        self.fit = state.get("fit")
        self.gen.set_state(state["gen"].cpu())
        self.rng.bit_generator.state = state["rng"]
