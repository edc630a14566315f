"""The method contract.

The trainer owns the optimiser, the schedule, `backward()`, `step()` and evaluation. A method owns its
loss and its state, and never sees the clean labels. Options are the keyword-only arguments of the
class's `__init__` (with defaults and type annotations): `--method ols:alpha=0.5,init=zeros` calls
`OLS(alpha=0.5, init="zeros")`.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F

from robustbench_ols.data import Batch
from robustbench_ols.models.inference import predict_logits
from robustbench_ols.spec.ids import without_later


@dataclass
class FitInfo:
    """What a method may know about its run (never the clean labels)."""
    num_classes: int
    num_train: int
    noisy_labels: torch.Tensor  # int64 (N,), on `device`
    epochs: int
    steps_per_epoch: int
    device: torch.device
    dataset: str
    seed: int
    # uint8 (N, 3, 32, 32) training images on `device`, in sample-index order, for `scan`.
    train_images: torch.Tensor | None = None
    channels_last: bool = False
    amp: bool = False
    # The wrong-label rate the spec asks for (R for symmetric:R and pairflip:R, R(K-1)/K for
    # symmetric-all, R x the fraction of moved classes for asymmetric, 0 for none; None for human
    # noise, whose rate a method could only know from the clean labels). Co-teaching's default tau.
    noise_rate: float | None = None
    # The trainer's learning rate for a 0-based epoch (for look-ahead steps such as MW-Net's).
    lr_at: Callable[[int], float] | None = None
    # A clean, class-balanced meta set held out of the training set, only for methods whose
    # `clean_meta_size()` > 0: uint8 images (M, 3, 32, 32) and their CLEAN labels, on `device`.
    # These are the only clean labels any method ever sees; the run record says so.
    meta_images: torch.Tensor | None = None
    meta_labels: torch.Tensor | None = None

    def scan(self, model, batch_size: int = 1000) -> torch.Tensor:
        """Logits (N, K), float32, of `model` on every training image in index order: eval mode,
        no augmentation, no gradient (e.g. per-sample losses for Arazo's mixture fit)."""
        return torch.cat(list(predict_logits(model, self.train_images, batch_size=batch_size,
                                             channels_last=self.channels_last, amp=self.amp)))


@dataclass
class StepOutput:
    loss: torch.Tensor  # a scalar, the mean over the batch
    logits: torch.Tensor  # (B, K) of model 0 on batch.x, used for the training statistics


class Method:
    name: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    num_models: ClassVar[int] = 1
    # Options added after runs of the method were recorded, with the value that reproduces those runs: the id rule
    # (spec/ids.py) leaves them out of options(), and so of the run_id, at that value.
    LATER_OPTIONS: ClassVar[Mapping] = MappingProxyType({})
    # Set by `bind` (build_method): how the user named the method, and its options with their defaults.
    _label: str = ""
    _options: Mapping = MappingProxyType({})

    def bind(self, label: str, options: dict) -> None:
        self._label, self._options = label, dict(options)

    def setup(self, info: FitInfo) -> None:
        self.info = info

    def on_epoch_start(self, epoch: int, models) -> None:
        pass

    def training_step(self, models, batch: Batch, epoch: int) -> StepOutput:
        logits = models[0](batch.x)
        return StepOutput(self.loss(logits, batch, epoch), logits)

    def loss(self, logits: torch.Tensor, batch: Batch, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def after_backward(self, batch: Batch, out: StepOutput) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @property
    def label(self) -> str:
        """How the user named the method (`ols`, `pkg.mod:Class`), for messages."""
        return self._label or self.name

    def options(self) -> dict:
        """The options as given, defaults included, under the id rule (LATER_OPTIONS): part of the run_id."""
        return without_later(self._options, self.LATER_OPTIONS)

    def effective_options(self) -> dict:
        """The values actually used, after setup() (e.g. SCE's per-dataset alpha and beta); recorded
        in spec.json. Default: options()."""
        return self.options()

    def clean_meta_size(self) -> int:
        """How many clean, class-balanced training images to hold out as `info.meta_images` /
        `info.meta_labels` (MW-Net); 0 for every method that must not see clean labels."""
        return 0


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k target_k log softmax(logits)_k; target rows are distributions."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
