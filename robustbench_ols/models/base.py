"""What every CIFAR model here shares: the input normalisation constants and the model registry.

Every registered factory has the signature ``fn(num_classes: int) -> nn.Module`` and returns a model that
takes float images in [0, 1] of shape (B, 3, 32, 32) (contiguous or channels_last), normalises them
internally with ``CIFAR_MEAN`` / ``CIFAR_STD`` (a ``resnet.Normalize`` module is its first layer) and
returns logits of shape (B, num_classes).
"""
from __future__ import annotations

from robustbench_ols.common.registry import Registry

# Per-channel statistics used by the OLS authors' CIFAR code (Zhang et al., "Delving Deep into Label
# Smoothing", IEEE TIP 2021; inherited from the CutMix-PyTorch pipeline), on the [0, 1] scale because
# models receive [0, 1] inputs.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

MODELS = Registry("model")


def register_model(name: str):
    """Decorator registering ``fn(num_classes) -> nn.Module`` under ``name`` (twice is an error)."""
    return MODELS.register(name)
