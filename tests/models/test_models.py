"""Contract tests for the model registry (robustbench_ols.models).

Every registered model is checked against the same contract: [0, 1] input of
shape (B, 3, 32, 32), normalisation inside the model, logits (B, K), works in
channels_last, deterministic seeded construction and the documented depth.
CPU only and batch 2 so the file stays fast on small machines.
"""

from __future__ import annotations

import copy
import functools
import re

import pytest
import torch
import torch.nn as nn

from robustbench_ols.models import (
    CIFAR_MEAN,
    CIFAR_STD,
    create_model,
    list_models,
    register_model,
)
from robustbench_ols.models.resnet import (
    BasicBlock,
    Bottleneck,
    CifarResNet,
    Normalize,
    ShortcutA,
)

EXPECTED = {
    "preact_resnet18", "resnet8", "resnet20", "resnet32", "resnet56", "resnet110",
    "resnet29b", "resnet56b", "resnet74b", "resnet110b",
}
MODELS = list_models()


@functools.lru_cache(maxsize=None)
def _built(name: str, num_classes: int) -> nn.Module:
    # Cached so each (name, K) is constructed once; tests deepcopy before
    # mutating (train/eval switches, memory format).
    torch.manual_seed(0)
    return create_model(name, num_classes).eval()


def get_model(name: str, num_classes: int = 10) -> nn.Module:
    return copy.deepcopy(_built(name, num_classes))


def make_input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 32, 32, generator=g)


def expected_depth(name: str) -> int:
    return int(re.search(r"(\d+)", name).group(1))


def main_path_layers(model: nn.Module) -> list:
    """Weighted layers (conv + linear) not belonging to a shortcut branch."""
    return [
        n for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and "shortcut" not in n
    ]


def test_registry_contents():
    assert set(MODELS) == EXPECTED
    assert MODELS == sorted(MODELS)


@pytest.mark.parametrize("bad", ["resnet21", "ResNet20", ""])
def test_unknown_name_lists_valid_names(bad):
    with pytest.raises(ValueError) as exc:
        create_model(bad, 10)
    msg = str(exc.value)
    assert repr(bad) in msg
    assert "valid models: " + ", ".join(MODELS) in msg


@pytest.mark.parametrize("k", [0, -3, 2.0, True])
def test_bad_num_classes(k):
    with pytest.raises(ValueError):
        create_model("resnet8", k)


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError):
        register_model("resnet20")(lambda num_classes: nn.Linear(1, num_classes))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("k", [10, 100])
def test_output_shape_and_finite(name, k):
    model = get_model(name, k)
    with torch.no_grad():
        out = model(make_input())
    assert out.shape == (2, k)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_matches_contiguous(name):
    model = get_model(name)
    x = make_input()
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.to(memory_format=torch.channels_last))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_normalisation_is_inside(name):
    model = get_model(name)
    norms = [m for m in model.modules() if isinstance(m, Normalize)]
    assert len(norms) == 1
    norm = model.normalize
    assert norm is norms[0]
    # Normalize is the first submodule, i.e. the first layer applied.
    assert next(iter(model.children())) is norm
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm.mean, mean)
    torch.testing.assert_close(norm.std, std)
    assert {"normalize.mean", "normalize.std"} <= set(dict(model.named_buffers()))

    # Feeding a manually normalised input to the model without its Normalize
    # must reproduce the output on the raw [0, 1] input.
    x = make_input()
    with torch.no_grad():
        out = model(x)
        model.normalize = nn.Identity()
        out_manual = model((x - mean) / std)
    torch.testing.assert_close(out, out_manual, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_depth_matches_name(name):
    model = get_model(name)
    depth = expected_depth(name)
    assert len(main_path_layers(model)) == depth
    if name.startswith("preact"):
        return
    block = Bottleneck if name.endswith("b") else BasicBlock
    per_block = 3 if block is Bottleneck else 2
    n = (depth - 2) // (3 * per_block)
    assert depth == 3 * per_block * n + 2
    for stage in (model.layer1, model.layer2, model.layer3):
        assert len(stage) == n
        assert all(type(b) is block for b in stage)


def test_preact_resnet18_structure():
    model = get_model("preact_resnet18")
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert [s[0].conv1.out_channels for s in stages] == [64, 128, 256, 512]
    assert [s[0].conv1.stride[0] for s in stages] == [1, 2, 2, 2]
    # Projection (1x1 conv) shortcuts exactly where the shape changes.
    assert [s[0].shortcut is not None for s in stages] == [False, True, True, True]
    assert model.fc.in_features == 512


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "resnet32", "resnet56", "resnet110"])
def test_basic_resnets_use_option_a(name):
    model = get_model(name)
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2  # one at each of the two stride-2 transitions
    assert all(sum(p.numel() for p in s.parameters()) == 0 for s in shortcuts)
    assert model.fc.in_features == 64


@pytest.mark.parametrize("name", ["resnet29b", "resnet56b", "resnet74b", "resnet110b"])
def test_bottleneck_widths_and_projections(name):
    model = get_model(name)
    assert [s[-1].conv3.out_channels for s in (model.layer1, model.layer2, model.layer3)] == [
        64, 128, 256,
    ]
    # Projection in the first block of every stage (16->64 channels, then stride 2).
    for stage in (model.layer1, model.layer2, model.layer3):
        assert isinstance(stage[0].shortcut, nn.Sequential)
        assert all(isinstance(b.shortcut, nn.Identity) for b in stage[1:])
    assert model.layer2[0].conv2.stride == (2, 2)  # stride sits in the 3x3
    assert model.fc.in_features == 256


def test_option_a_shortcut_values():
    x = torch.randn(2, 16, 8, 8)
    y = ShortcutA(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert (y[:, 16:] == 0).all()


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet20_parameter_count():
    # He et al. 2016, Table 6: 0.27M parameters with option A shortcuts.
    assert _num_params(get_model("resnet20")) == 269_722
    # With 1x1-conv+BN projections (OLS / CutMix-PyTorch code) it is 272,474.
    assert _num_params(CifarResNet(BasicBlock, 20, 10, shortcut="B")) == 272_474


@pytest.mark.parametrize("name", ["resnet8", "resnet29b", "preact_resnet18"])
def test_seeded_construction_is_deterministic(name):
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        states.append(create_model(name, 10).state_dict())
    a, b, c = states
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_initialisation():
    model = get_model("resnet56")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    w = model.layer3[1].conv1.weight  # 64 -> 64, 3x3: fan_out = 576
    assert abs(w.std().item() - (2.0 / 576) ** 0.5) < 0.1 * (2.0 / 576) ** 0.5


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_input_gradient(name):
    # Attacks need d(loss)/d(input); also catches in-place ReLU misuse.
    model = get_model(name).train()
    x = make_input().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet8", "resnet29b", "preact_resnet18"])
def test_bf16_autocast(name):
    model = get_model(name).to(memory_format=torch.channels_last)
    x = make_input().to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out.float()).all()


def test_normalize_keeps_dtype_and_memory_format():
    norm = Normalize()
    x = make_input().to(memory_format=torch.channels_last)
    y = norm(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert norm(x.to(torch.bfloat16)).dtype == torch.bfloat16
