"""Model registry for the CIFAR architectures used in the OLS experiments.

Every registered factory has the signature ``fn(num_classes: int) -> nn.Module``
and returns a model that

* takes float images in [0, 1] of shape (B, 3, 32, 32) (contiguous or
  channels_last),
* normalises them internally with ``CIFAR_MEAN`` / ``CIFAR_STD`` (a
  :class:`~robustbench_ols.models.resnet.Normalize` module is the first layer),
* returns logits of shape (B, num_classes).

Importing this package only fills the registry: it touches no device and
consumes no random numbers (models are built lazily by :func:`create_model`).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch.nn as nn

from ..errors import SpecError

# Per-channel statistics used by the OLS authors' CIFAR code (Zhang et al.,
# "Delving Deep into Label Smoothing", IEEE TIP 2021; inherited from the
# CutMix-PyTorch pipeline).
# Expressed on the [0, 1] scale because models receive [0, 1] inputs.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

ModelFactory = Callable[[int], nn.Module]

_REGISTRY: Dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``fn(num_classes) -> nn.Module`` under ``name``.

    Registering the same name twice is an error, because silently replacing a
    factory would make experiment configs ambiguous.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty string, got {name!r}")

    def decorator(fn: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> List[str]:
    """Return the sorted list of registered model names."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int) -> nn.Module:
    """Build the registered model ``name`` with a ``num_classes``-way head.

    Raises ``ValueError`` naming the bad name and every valid one if ``name``
    is unknown, and if ``num_classes`` is not a positive integer.
    """
    if name not in _REGISTRY:
        raise SpecError(
            f"unknown model {name!r}; valid models: {', '.join(list_models())}"
        )
    # bool is an int subclass; reject it explicitly so `True` is not 1 class.
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _REGISTRY[name](num_classes)


# Imported last: the submodules use `register_model` and the CIFAR constants
# defined above, so they must exist before these imports run.
from . import preact, resnet  # noqa: E402,F401

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "create_model",
    "list_models",
    "register_model",
]
