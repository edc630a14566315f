"""Meta-Weight-Net (Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting",
NeurIPS 2019): a 1-100-1 MLP maps each sample's loss to its weight and is itself trained so that a
one-step look-ahead of the weighted update lowers the loss on a small clean meta set."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from robustbench_ols.common.device_random import cpu_generator, to_device
from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods.base import Method, StepOutput
from robustbench_ols.methods.registry import register

# The MLP optimiser's weight decay when `meta_wd` is not given, per optimiser (the authors' code).
DEFAULT_WD = {"adam": 1e-4, "sgd": 5e-4}


class MetaWeightNet(nn.Module):
    """Linear(1, hidden) - ReLU - Linear(hidden, 1) - sigmoid: a loss (B, 1) to a weight in (0, 1).
    PyTorch's default nn.Linear initialisation (the authors' MetaLinear wraps nn.Linear)."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.linear1 = nn.Linear(1, hidden)
        self.linear2 = nn.Linear(hidden, 1)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear2(F.relu(self.linear1(loss))))


@register
class MWNet(Method):
    """Meta-Weight-Net.

    Each step, on the noisy batch (x, y) and a clean meta batch:
    (a) look-ahead: c_i = CE(f(x_i; theta), y_i), v_i = MLP(c_i detached), L = norm(c, v);
        theta' = theta - lr * dL/dtheta (create_graph=True; plain SGD, as in the authors' code),
        lr = info.lr_at(epoch), the trainer's learning rate for this epoch;
    (b) meta: CE(f(x_meta; theta'), y_meta) is back-propagated into the MLP parameters only, then
        one step of the MLP's own optimiser;
    (c) real: c_i = CE(f(x_i; theta), y_i), weights v_i = MLP(c_i) from the updated MLP, detached,
        loss = norm(c, v), returned for the trainer's backward and SGD step.
    The meta batch: `batch_size` distinct images drawn uniformly from info.meta_images (all of them
    when the meta set is smaller), a fresh draw each step from the method's generator, /255, no
    augmentation (the authors augment it and cycle a shuffled loader through it).

    Batch norm: the look-ahead forwards (a) and (b) run in train mode through
    `torch.func.functional_call` with clones of models[0]'s buffers, so they use batch statistics
    like the authors' copied meta-model and their running-statistic updates land on the clones and
    are discarded; models[0]'s running statistics are updated exactly once per step, by forward (c),
    the same as a plain training step.

    Options
    - meta: clean, class-balanced training images held out as the meta set, 1000 (paper: 1000 on
      CIFAR-10, 100 per class); these are the only clean labels the method sees.
    - hidden: MLP hidden width, 100.
    - meta_optim: `adam` (the repository's MW-Net.py: Adam lr 1e-3, weight decay 1e-4) or `sgd` (its
      earlier train_WRN-28-10_Meta_PGC.py: SGD lr 1e-3, momentum 0.9, Nesterov, weight decay 5e-4).
    - meta_lr: 1e-3 (both scripts). meta_wd: weight decay; default (None) 1e-4 for adam, 5e-4 for sgd.
    - norm: `mean` (MW-Net.py and the paper's objective: sum_i v_i c_i / B) or `sum` (the PGC
      script: sum_i v_i c_i / sum_i v_i, the weights normalised within the batch); used in both the
      look-ahead and the real loss.

    State: the MLP's parameters, its optimiser's state and the meta-batch generator, all in
    `state_dict()`; none of them is in `models`, so the trainer's optimiser never touches them.
    """
    name = "mwnet"
    citation = ("Shu, Xie, Yi, Zhao, Zhou, Xu, Meng, Meta-Weight-Net: Learning an Explicit Mapping For "
                "Sample Weighting, NeurIPS 2019, arXiv 1902.07379")

    def __init__(self, *, meta: int = 1000, hidden: int = 100, meta_optim: str = "adam",
                 meta_lr: float = 1e-3, meta_wd: float | None = None, norm: str = "mean"):
        if meta < 1:
            raise SpecError(f"mwnet: meta (size of the clean meta set) must be >= 1, got {meta}")
        if hidden < 1:
            raise SpecError(f"mwnet: hidden must be >= 1, got {hidden}")
        if meta_optim not in DEFAULT_WD:
            raise SpecError(f"mwnet: meta_optim must be adam or sgd, got {meta_optim!r}")
        if not meta_lr > 0:
            raise SpecError(f"mwnet: meta_lr must be > 0, got {meta_lr}")
        if meta_wd is not None and not meta_wd >= 0:
            raise SpecError(f"mwnet: meta_wd must be >= 0, got {meta_wd}")
        if norm not in ("mean", "sum"):
            raise SpecError(f"mwnet: norm must be mean or sum, got {norm!r}")
        self.meta, self.hidden, self.meta_optim = meta, hidden, meta_optim
        self.meta_lr, self.norm = meta_lr, norm
        self.meta_wd = DEFAULT_WD[meta_optim] if meta_wd is None else meta_wd

    def clean_meta_size(self) -> int:
        return self.meta

    def effective_options(self):
        return {**self.options(), "meta": self.meta, "hidden": self.hidden, "meta_optim": self.meta_optim,
                "meta_lr": self.meta_lr, "meta_wd": self.meta_wd, "norm": self.norm}

    def setup(self, info):
        super().setup(info)
        if info.meta_images is None or info.meta_labels is None or len(info.meta_images) == 0:
            raise RuntimeError("mwnet needs the clean meta set (info.meta_images / info.meta_labels)")
        if info.lr_at is None:
            raise RuntimeError("mwnet needs info.lr_at for its look-ahead step")
        # The MLP's initialisation is seeded from the run seed without touching the global RNG.
        # fork_rng(devices=[]) restores only the CPU state while manual_seed also reseeds CUDA:
        # seed the CPU generator alone, build on the CPU, then move.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed((info.seed * 1_000_003 + 0x3E7) % (2 ** 63))
            self.vnet = MetaWeightNet(self.hidden)
        self.vnet.to(info.device)
        params = list(self.vnet.parameters())
        if self.meta_optim == "adam":
            self.opt = torch.optim.Adam(params, lr=self.meta_lr, weight_decay=self.meta_wd)
        else:
            self.opt = torch.optim.SGD(params, lr=self.meta_lr, momentum=0.9, nesterov=True,
                                       weight_decay=self.meta_wd)
        self.gen = cpu_generator(info.seed * 1_000_003 + 0x3E8)  # draws copied to the device

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """The MLP's weights (B,) for per-sample losses (B,), in float32 (autocast off)."""
        with torch.autocast(losses.device.type, enabled=False):
            return self.vnet(losses.detach().float()[:, None]).squeeze(1)

    def weighted(self, losses: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.norm == "mean":
            return (losses * v).mean()
        s = v.sum()
        # The authors skip the normalisation when the sum is 0; torch.where keeps that without a sync.
        return (losses * torch.where(s != 0, v / s, v)).sum()

    def meta_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = len(self.info.meta_images)
        idx = to_device(torch.randperm(m, generator=self.gen)[:n], self.info.meta_images.device)
        x = self.info.meta_images[idx].float().div_(255)
        if self.info.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.info.meta_labels[idx]

    def training_step(self, models, batch, epoch):
        model, x, y = models[0], batch.x, batch.y
        params = dict(model.named_parameters())
        buffers = {k: b.clone() for k, b in model.named_buffers()}  # look-ahead BN updates go here
        # (a) the look-ahead step.
        logits = functional_call(model, (params, buffers), (x,))
        cost = F.cross_entropy(logits.float(), y, reduction="none")
        l_f = self.weighted(cost, self.weights(cost))
        names = [k for k, p in params.items() if p.requires_grad]
        grads = torch.autograd.grad(l_f, [params[k] for k in names], create_graph=True, allow_unused=True)
        lr = self.info.lr_at(epoch)
        ahead = dict(params)
        for k, g in zip(names, grads):
            if g is not None:
                ahead[k] = params[k] - lr * g
        # (b) the meta step: the MLP's gradient only.
        xm, ym = self.meta_batch(len(y))
        meta_loss = F.cross_entropy(functional_call(model, (ahead, buffers), (xm,)).float(), ym)
        self.opt.zero_grad(set_to_none=True)
        meta_loss.backward(inputs=list(self.vnet.parameters()))
        self.opt.step()
        self.last_meta_loss = meta_loss.detach()
        # (c) the real loss with the updated MLP's weights.
        logits = model(x)
        cost = F.cross_entropy(logits.float(), y, reduction="none")
        with torch.no_grad():
            v = self.weights(cost)
        return StepOutput(self.weighted(cost, v), logits)

    def state_dict(self):
        return {"vnet": {k: v.clone() for k, v in self.vnet.state_dict().items()},
                "opt": copy.deepcopy(self.opt.state_dict()), "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.vnet.load_state_dict(state["vnet"])
        self.opt.load_state_dict(copy.deepcopy(state["opt"]))
        # A checkpoint loaded onto a GPU brings Adam's `step` counters there; a non-capturable Adam reads each one
        # back to the host every step (a sync per parameter): keep them on the CPU, where Adam makes them.
        for st in self.opt.state.values():
            if torch.is_tensor(st.get("step")):
                st["step"] = st["step"].cpu()
        self.gen.set_state(state["gen"].cpu())
