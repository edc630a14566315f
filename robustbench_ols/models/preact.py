"""Pre-activation ResNet-18 for CIFAR with built-in input normalisation.

He, Zhang, Ren, Sun. "Identity Mappings in Deep Residual Networks",
ECCV 2016. This is the common CIFAR variant used throughout the adversarial
robustness literature: a 3x3 stem conv (3->64, no pooling), four stages of two
pre-activation basic blocks (widths 64/128/256/512, strides 1/2/2/2), 1x1 conv
projection shortcuts where the shape changes, a final BN+ReLU (needed because
pre-activation blocks leave the last residual sum un-normalised), global
average pooling and a linear head.

Input: float in [0, 1], shape (B, 3, 32, 32), contiguous or channels_last;
normalised inside by :class:`~robustbench_ols.models.resnet.Normalize`.
Output: logits (B, num_classes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_ols.models.base import register_model
from robustbench_ols.models.resnet import Normalize, conv1x1, conv3x3, init_weights


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with identity or 1x1-conv shortcut.

    A projection shortcut is applied to the pre-activated input (after the
    first BN-ReLU), as in He et al.'s reference implementation; an identity
    shortcut uses the raw input so the residual stream stays un-normalised.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = (
            conv1x1(in_planes, planes, stride) if stride != 1 or in_planes != planes else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: `x` is still needed for the identity shortcut.
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Four-stage pre-activation ResNet; ``num_blocks`` blocks per stage."""

    def __init__(self, num_blocks=(2, 2, 2, 2), num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize()
        self.conv1 = conv3x3(3, 64)
        self.in_planes = 64
        stages = []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(PreActBlock(self.in_planes, planes, s))
                self.in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.relu(self.bn(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int) -> nn.Module:
    """PreAct ResNet-18 (He et al. 2016b), 18 conv + linear layers on the main path."""
    return PreActResNet((2, 2, 2, 2), num_classes)
