"""CIFAR ResNets (basic-block and bottleneck) with built-in input normalisation.

Conventions shared by every model here:

* input: float tensor in [0, 1], shape (B, 3, 32, 32); contiguous or
  ``torch.channels_last`` both work, as does bf16 autocast;
* the first layer is :class:`Normalize`, so callers (e.g. adversarial attacks
  that work in pixel space) never normalise themselves;
* output: logits of shape (B, num_classes).

References
----------
He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition",
CVPR 2016, Sec. 4.2 (CIFAR-10 ResNets: 6n+2 layers, widths 16/32/64,
option A identity shortcuts).

The bottleneck variants (``resnet*b``, 9n+2 layers) follow the CIFAR ResNet
of the CutMix-PyTorch code base (Yun et al., ICCV 2019), on which the Online
Label Smoothing code (Zhang et al., IEEE TIP 2021) builds.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_ols.models.base import CIFAR_MEAN, CIFAR_STD, register_model


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for (B, C, H, W) inputs in [0, 1].

    ``mean``/``std`` are buffers of shape (1, C, 1, 1) so they follow
    ``.to(device)`` and are saved in the state dict. Broadcasting keeps the
    input's memory format, so channels_last inputs stay channels_last. The
    buffers are cast to the input dtype so a half/bf16 input is not silently
    promoted to float32.
    """

    def __init__(self, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std must have the same length")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convs, BN weight 1 / bias 0.

    Linear layers keep PyTorch's default init, as in the reference code.
    Uses the global torch RNG, so construction is deterministic after
    ``torch.manual_seed``.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """He et al. 2016 option A: parameter-free identity shortcut.

    Subsamples spatially by taking every ``stride``-th pixel and appends
    zero channels up to ``out_planes``. Keeping it parameter-free is what
    makes resnet20 have 0.27M parameters as reported in the paper.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        if out_planes < in_planes:
            raise ValueError("option A shortcut cannot reduce channels")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra:
            # F.pad pads from the last dim backwards: (W, W, H, H, C_front, C_back).
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.out_planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """3x3-3x3 post-activation block (He et al. 2016).

    ``shortcut="A"`` (default, as in the paper's CIFAR experiments) uses the
    parameter-free :class:`ShortcutA` where shapes change; ``shortcut="B"``
    uses a 1x1 conv + BN projection instead, which is what the OLS /
    CutMix-PyTorch code does for its basic-block CIFAR ResNets (resnet20 then
    has 272,474 parameters for 10 classes instead of 269,722).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (stride in the 3x3), output ``planes * 4``.

    Projection shortcut (1x1 conv with stride + BN) whenever the stride or
    the channel count changes, as in the CutMix-PyTorch CIFAR ResNet.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != out_planes:
            self.shortcut: nn.Module = nn.Sequential(
                conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Three-stage CIFAR ResNet: widths 16/32/64 (times block expansion).

    ``depth`` counts conv + linear layers on the main path: 6n+2 for
    :class:`BasicBlock`, 9n+2 for :class:`Bottleneck`, with n blocks per
    stage. Input [0, 1] (B, 3, H, W); output logits (B, num_classes).
    ``shortcut`` ("A" or "B") only applies to :class:`BasicBlock`; the
    registered ``resnet{8,20,32,56,110}`` use "A" (He et al. 2016).
    """

    def __init__(self, block: type, depth: int, num_classes: int, shortcut: str = "A"):
        super().__init__()
        self.block_kwargs = {"shortcut": shortcut} if block is BasicBlock else {}
        per_block = 2 if block is BasicBlock else 3
        if (depth - 2) % (3 * per_block) != 0:
            raise ValueError(f"depth {depth} is not {3 * per_block}n+2 for {block.__name__}")
        n = (depth - 2) // (3 * per_block)
        self.depth, self.blocks_per_stage = depth, n

        self.normalize = Normalize()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.in_planes = 16
        self.layer1 = self._make_layer(block, 16, n, stride=1)
        self.layer2 = self._make_layer(block, 32, n, stride=2)
        self.layer3 = self._make_layer(block, 64, n, stride=2)
        self.fc = nn.Linear(64 * block.expansion, num_classes)
        init_weights(self)

    def _make_layer(self, block: type, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s, **self.block_kwargs))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        # Adaptive pooling = the reference 8x8 average pool for 32x32 inputs,
        # but does not hard-code the input resolution.
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def _register(name: str, block: type, depth: int) -> None:
    def factory(num_classes: int) -> nn.Module:
        return CifarResNet(block, depth, num_classes)

    factory.__name__ = name
    factory.__doc__ = f"{name}: CIFAR ResNet, {block.__name__} blocks, depth {depth}."
    register_model(name)(factory)


for _depth in (8, 20, 32, 56, 110):
    _register(f"resnet{_depth}", BasicBlock, _depth)
for _depth in (29, 56, 74, 110):
    _register(f"resnet{_depth}b", Bottleneck, _depth)
del _depth
