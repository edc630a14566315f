"""A stateful plugin for the contract test: smooths towards an EMA of each class's predictions and
draws a random per-step epsilon from its own generator (so resuming must restore both)."""
import torch
import torch.nn.functional as F

from robustbench_ols.methods import Method


class EMASmoothing(Method):
    name = "ema-smoothing"
    citation = "test plugin"

    def __init__(self, *, momentum: float = 0.9, max_eps: float = 0.2):
        self.momentum, self.max_eps = momentum, max_eps

    def setup(self, info):
        super().setup(info)
        k = info.num_classes
        self.prior = torch.full((k, k), 1.0 / k, device=info.device)
        self.gen = torch.Generator(device=info.device).manual_seed(info.seed + 99)

    def loss(self, logits, batch, epoch):
        eps = self.max_eps * torch.rand((), generator=self.gen, device=logits.device)
        target = (1 - eps) * F.one_hot(batch.y, logits.shape[1]).float() + eps * self.prior[batch.y]
        return -(target * F.log_softmax(logits.float(), 1)).sum(1).mean()

    def after_backward(self, batch, out):
        with torch.no_grad():
            p = F.softmax(out.logits.float(), 1)
            mean = torch.zeros_like(self.prior).index_add_(0, batch.y, p)
            count = torch.zeros(len(self.prior), device=p.device).index_add_(0, batch.y, torch.ones_like(batch.y, dtype=torch.float))
            seen = count > 0
            upd = mean / count.clamp_min(1)[:, None]
            self.prior = torch.where(seen[:, None], self.momentum * self.prior + (1 - self.momentum) * upd, self.prior)

    def state_dict(self):
        return {"prior": self.prior.clone(), "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.prior = state["prior"].to(self.prior.device).clone()
        self.gen.set_state(state["gen"].cpu() if self.gen.device.type == "cpu" else state["gen"])
