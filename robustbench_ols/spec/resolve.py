"""A RunSpec resolved once, at the entry: its texts turned into the objects every later step uses.

`resolve(spec)` builds the run's method (its class looked up, its options converted and checked, its display
label), parses the noise and checks it against the dataset, and finds the dataset loader and the model
factory in their registries, so a bad name or value fails here, before any data is loaded or any file is
written. Nothing downstream parses a text of the spec again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from robustbench_ols.data import DATASETS
from robustbench_ols.data.noise import NoiseSpec
from robustbench_ols.methods import Method, build_method, method_label
from robustbench_ols.models import MODELS
from robustbench_ols.spec import RunSpec


@dataclass(frozen=True)
class ResolvedRun:
    spec: RunSpec
    method: Method  # a fresh instance for this run (its state belongs to one execution)
    label: str  # `ols`, `ls:eps=0.2`: the method with the options that differ from its defaults
    noise: NoiseSpec
    load_data: Callable  # the dataset's loader (data.DATASETS)
    make_model: Callable  # the model's factory (models.MODELS): fn(num_classes) -> nn.Module


def resolve(spec: RunSpec) -> ResolvedRun:
    method, options = build_method(spec.method, spec.options)
    noise = NoiseSpec.parse(spec.noise)
    noise.check_dataset(spec.dataset)
    return ResolvedRun(spec, method, method_label(spec.method, options), noise,
                       DATASETS.get(spec.dataset), MODELS.get(spec.model))
