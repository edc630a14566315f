"""The CIFAR architectures of the OLS experiments, by name (see base.py for the contract).

Importing this package only fills the registry: it touches no device and consumes no random numbers
(models are built lazily by :func:`create_model`).
"""
from __future__ import annotations

import torch.nn as nn

from robustbench_ols.models import preact, resnet  # noqa: F401  (registers the architectures)
from robustbench_ols.models.base import CIFAR_MEAN, CIFAR_STD, MODELS, register_model


def list_models() -> list[str]:
    """The sorted registered model names."""
    return MODELS.names()


def create_model(name: str, num_classes: int) -> nn.Module:
    """Build the registered model ``name`` with a ``num_classes``-way head. An unknown name is a
    SpecError listing every valid one; ``num_classes`` must be a positive int (ValueError)."""
    factory = MODELS.get(name)
    # bool is an int subclass; reject it explicitly so `True` is not 1 class.
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return factory(num_classes)


__all__ = ["CIFAR_MEAN", "CIFAR_STD", "MODELS", "create_model", "list_models", "register_model"]
