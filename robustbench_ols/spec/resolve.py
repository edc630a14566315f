"""A RunSpec resolved once, at the entry: its texts turned into the objects every later step uses.

Making a RunSpec already builds its method once (its options converted, checked and completed with their
defaults) and parses its noise (`spec.noise_spec`). `check(spec)` adds what construction leaves: the noise
against the dataset, the dataset and model names, so a bad name or value fails before any data is loaded or any
file is written. `resolve(spec)` builds the run's own method instance and finds the dataset loader and the model
factory. Nothing downstream parses a text of the spec again.
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


def check(spec: RunSpec) -> None:
    """What a spec's construction leaves to check: the noise against the dataset, the dataset and model names
    (the method's options were built and checked when the RunSpec was made). A grid checks every cell with it."""
    spec.noise_spec.check_dataset(spec.dataset)
    DATASETS.get(spec.dataset)
    MODELS.get(spec.model)


def resolve(spec: RunSpec) -> ResolvedRun:
    """The run's objects: a fresh method instance (its state belongs to one execution), its label, the parsed
    noise (the spec's own), the dataset loader and the model factory."""
    check(spec)
    method, options = build_method(spec.method, spec.options)
    return ResolvedRun(spec, method, method_label(spec.method, options), spec.noise_spec,
                       DATASETS.get(spec.dataset), MODELS.get(spec.model))
