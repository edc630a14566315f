"""An example smoothing method for `rbols audit`: label smoothing towards a fixed class-similarity prior.

Label smoothing moves eps of the target mass to the other classes uniformly; OLS learns where to move
it from the model's own predictions. This method sits in between: it moves eps to the other classes
according to a *fixed* prior of which classes resemble each other, decided before training. For
CIFAR-10 the prior is the coarse split of its classes into vehicles (airplane, automobile, ship, truck)
and animals (bird, cat, deer, dog, frog, horse): a share `within` of eps goes, evenly, to the other
classes of the same group, the rest evenly to the classes of the other group. For any other dataset
there is no prior, and the method is plain label smoothing over the other classes (eps/(K-1) each).

    target(y) = (1 - eps) * onehot(y) + eps * P[y],   P[y, y] = 0, rows of P sum to 1

Run it by import path from the repository root:

    rbols run --method examples.prior_smoothing:PriorSmoothing:eps=0.1,within=0.8 ...
    rbols audit --method examples.prior_smoothing:PriorSmoothing --against ls,ols --preset quick
"""
from __future__ import annotations

import torch

from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods import Method, soft_cross_entropy

# CIFAR-10 class indices: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse,
# 8 ship, 9 truck.
CIFAR10_GROUPS = ((0, 1, 8, 9), (2, 3, 4, 5, 6, 7))


def similarity_prior(num_classes: int, groups, within: float) -> torch.Tensor:
    """P (K x K): row y spreads `within` evenly over the other classes of y's group and 1 - within
    evenly over the classes outside it (all of it to one side when the other is empty)."""
    group_of = torch.empty(num_classes, dtype=torch.long)
    for g, members in enumerate(groups):
        group_of[list(members)] = g
    same = group_of[:, None] == group_of[None, :]
    same.fill_diagonal_(False)
    other = group_of[:, None] != group_of[None, :]
    n_same = same.sum(1, keepdim=True).double()
    n_other = other.sum(1, keepdim=True).double()
    w_same = torch.where(n_other == 0, 1.0, torch.where(n_same == 0, 0.0, within))
    p = same.double() * (w_same / n_same.clamp(min=1)) + other.double() * ((1 - w_same) / n_other.clamp(min=1))
    return p.float()


class PriorSmoothing(Method):
    """Label smoothing towards a fixed class-similarity prior (CIFAR-10: vehicles vs animals)."""
    name = "prior-ls"
    citation = "robustbench_ols example: label smoothing towards a fixed class-similarity prior"

    def __init__(self, *, eps: float = 0.1, within: float = 0.8):
        if not 0 <= eps < 1:
            raise SpecError(f"prior-ls: eps must be in [0, 1), got {eps}")
        if not 0 <= within <= 1:
            raise SpecError(f"prior-ls: within must be in [0, 1], got {within}")
        self.eps, self.within = eps, within

    def setup(self, info) -> None:
        super().setup(info)
        k = info.num_classes
        if info.dataset == "cifar10":
            prior = similarity_prior(k, CIFAR10_GROUPS, self.within)
        else:  # no prior known: uniform over the other classes
            prior = similarity_prior(k, [range(k)], 1.0)
        eye = torch.eye(k)
        self.targets = ((1 - self.eps) * eye + self.eps * prior).to(info.device)  # row y: target of class y

    def effective_options(self) -> dict:
        prior = "CIFAR-10 vehicles/animals" if self.info.dataset == "cifar10" else "uniform over other classes"
        return {**self.options(), "prior": prior}

    def loss(self, logits, batch, epoch):
        return soft_cross_entropy(logits, self.targets[batch.y])
