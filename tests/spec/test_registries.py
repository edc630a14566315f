"""One registry style (registry.Registry) for methods, models, datasets and attacks; a new dataset or
attack is one file plus one registration, from outside the package."""
import importlib
import json
import sys
import textwrap

import pytest

from robustbench_ols import ExecOptions, RunSpec
from robustbench_ols.attacks import ATTACKS, AttackSpec
from robustbench_ols.common.errors import DataError, SpecError
from robustbench_ols.common.registry import Registry
from robustbench_ols.data import DATASETS
from robustbench_ols.methods import METHODS
from robustbench_ols.models import MODELS
from robustbench_ols.spec import EvalSpec
from robustbench_ols.train.run import execute


def test_one_registry_per_kind_with_the_same_errors():
    for reg, name in ((METHODS, "ols"), (MODELS, "resnet8"), (DATASETS, "cifar10"), (ATTACKS, "pgd")):
        assert isinstance(reg, Registry) and name in reg.names() and reg.get(name) is not None
        with pytest.raises(SpecError if reg is not DATASETS else DataError) as e:
            reg.get("no-such-thing")
        assert f"unknown {reg.kind} 'no-such-thing'; valid {reg.kind}s: " in str(e.value)
        assert ", ".join(reg.names()) in str(e.value)


def test_a_name_is_registered_once():
    reg = Registry("widget")
    reg.register("a", int)
    reg.register("a", int)  # the same entry again: harmless
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", float)
    with pytest.raises(TypeError):
        reg.register("", int)


TOY = '''
"""A toy dataset and a toy attack, registered from outside robustbench_ols. The attack writes no key parser:
the default one reads noise_err and noise_eps4_err."""
import torch
from dataclasses import dataclass
from typing import ClassVar

from robustbench_ols.attacks import ATTACKS, AttackSpec
from robustbench_ols.data import DATASETS, make_synthetic


@DATASETS.register("toy-shapes")
def load(name, data_root, *, download, verify, seed):
    d = make_synthetic(seed=seed + 11, num_classes=4, n_train=240, n_test=120)
    d.name = name
    return d


@ATTACKS.register("noise")
@dataclass(frozen=True)
class UniformNoise(AttackSpec):
    """Not an attack: uniform noise of size eps (a baseline any real attack must beat)."""
    kind: ClassVar[str] = "noise"

    def build(self, model):
        eps = self.eps
        def perturb(x, y):
            return (x + eps * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
        return perturb
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_plugins.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("toy_plugins")
    sys.modules.pop("toy_plugins", None)
    DATASETS.unregister("toy-shapes")  # leave the registries as they were
    ATTACKS.unregister("noise")


def test_a_dataset_and_an_attack_from_outside_the_package_run_end_to_end(toy, tmp_path, one_torch_thread):
    spec = RunSpec(dataset="toy-shapes", model="resnet8", method="ls", noise="symmetric:0.2", epochs=1,
                   batch_size=60, milestones=())
    ev = EvalSpec(attacks=("noise:eps=4/255", "fgsm"), attack_examples=40, cifar10h=False)
    r = execute(spec, ExecOptions(progress=False), tmp_path / "runs", ev)
    assert r.status == "done" and 0 <= r.metrics["noise_eps4_err"] <= 1 and "fgsm_err" in r.metrics
    record = json.loads((r.run_dir / "spec.json").read_text())
    assert record["spec"]["dataset"] == "toy-shapes" and record["method"]["label"] == "ls"
    assert AttackSpec.from_key("noise_eps4_err").label == "NOISE (4/255)"
    noisy = json.loads((r.run_dir / "noise.json").read_text())
    assert noisy["num_samples"] == 240 and len(noisy["T"]) == 4
