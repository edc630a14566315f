"""Typed, frozen specifications: a run's (`RunSpec`, whose hash is the run_id that names its directory),
how it is executed (`ExecOptions`) and how a trained model is scored (`EvalSpec`, whose hash is the
eval_id of its records).

A `RunSpec` holds everything that changes the numbers a run produces. Execution details that do not
(device, memory format, data root, progress bar) live in `ExecOptions` and are recorded in
`spec.json` but are not part of the run_id, so the same experiment on a GPU or a CPU maps to the same
directory name.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from robustbench_ols.attacks.spec import DEFAULT_CHECK_EXAMPLES, DEFAULT_SWEEP, AttackSpec
from robustbench_ols.common.errors import SpecError
from robustbench_ols.spec.ids import (
    LATER_EVAL_FIELDS,
    LATER_RUN_FIELDS,
    attack_batch_identity,
    content_id,
    without_later,
)
from robustbench_ols.trackers import parse_trackers  # names only: no tracker library is imported or looked for
from robustbench_ols.train.selection import check_selection

SCHEDULES = ("step", "cosine")
VAL_LABELS = ("noisy", "clean")
NOISY_VAL_DEFAULT = 0.05  # --noisy-val without a share: the CIFAR-N reproduction's 5% of the noisy training set


@dataclass(frozen=True)
class RunSpec:
    dataset: str = "cifar10"
    model: str = "resnet20"
    method: str = "hard"
    # Resolved method options, defaults included, as sorted (name, value) pairs: `ols` and
    # `ols:alpha=0.5` are the same run.
    method_options: tuple = ()
    noise: str = "none"
    noise_seed: int = 0
    seed: int = 0
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "step"
    # Epochs (0-based) at which the step schedule multiplies the lr by lr_decay; None = the paper's
    # 150/225 of 300, i.e. 50% and 75% of the epochs. Always () for cosine.
    milestones: tuple | None = None
    lr_decay: float = 0.1
    train_subset: int = 0  # 0 = the whole training set
    subset_seed: int = 0
    augment: bool = True
    amp: bool = False  # bf16 autocast: changes the numbers, so it is part of the run_id
    # Class-balanced images held out of the training set after the noise is drawn: the best epoch is
    # chosen on them and temperature scaling is fitted on them. Their labels are the noisy ones (what a
    # practitioner has) unless val_labels = "clean".
    val_split: int = 0
    val_labels: str = "noisy"
    # The per-epoch test pass (epochs.csv's test_loss/test_err, Fig. 4, test_err_best): every K-th epoch
    # only, and on a fixed class-balanced subset of N test images (0: all). The last epoch is always
    # tested on the whole test set, and the final scores always are: neither changes training or the
    # final figures, only what epochs.csv records and so the best-epoch figure (part of the run_id).
    test_every: int = 1
    test_subset: int = 0
    # A class-balanced share (by noisy label) of the noisy training set held out before training, with its
    # noisy labels: the noisy-validation split of checkpoint selection (selection.py), which chooses the best
    # epoch and fits temperature scaling as --val-split does. 0: none.
    noisy_val: float = 0.0
    # The noise text parsed once (a NoiseSpec); derived from `noise`, not part of the run_id.
    noise_spec: object = dataclasses.field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self):
        self._resolve()
        _check(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        for name in ("seed", "noise_seed", "subset_seed"):
            _check(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        _check(self.momentum > 0 or not self.nesterov,
               "Nesterov momentum needs --momentum > 0; pass --no-nesterov for plain SGD")
        _check(self.batch_size >= 2, f"--batch-size must be >= 2 (batch norm), got {self.batch_size}")
        _check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        _check(self.schedule in SCHEDULES,
               f"unknown --schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        _check(0 < self.lr_decay <= 1, f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        _check(self.train_subset >= 0, f"--train-subset must be >= 0, got {self.train_subset}")
        _check(self.val_split >= 0, f"--val-split must be >= 0, got {self.val_split}")
        _check(self.noisy_val == 0 or 0 < self.noisy_val <= 0.5,
               f"--noisy-val {self.noisy_val:g}: the share of the noisy training set held out must lie in (0, 0.5] "
               f"(e.g. {NOISY_VAL_DEFAULT:g}, the default when the flag is given alone)")
        _check(not (self.noisy_val and self.val_split), "--noisy-val and --val-split both hold images out of the "
               "training set; give one (--noisy-val SHARE holds out a share with its noisy labels)")
        _check(not (self.noisy_val and self.val_labels != "noisy"), "--noisy-val holds out noisy labels; drop "
               "--val-labels clean (or use --val-split N --val-labels clean for a clean split)")
        _check(self.test_every >= 1, f"--test-every must be >= 1 (1: a test pass every epoch), got {self.test_every}")
        _check(self.test_subset >= 0, f"--test-subset must be >= 0 (0: the whole test set), got {self.test_subset}")
        for m in self.milestones:
            _check(0 < m < self.epochs,
                   f"--milestones must lie in 1..{self.epochs - 1} (0-based epochs), got {m}")

    def _resolve(self) -> None:
        """Canonical form, so the CLI and the Python API give one run_id for one experiment: the
        method's options with their defaults, the noise spec's canonical text, the milestones."""
        # imported here: the CLI reads RunSpec's fields for its options, and `rbols --help` must not wait
        # for torch (which the method registry imports)
        from robustbench_ols.data.noise import NoiseSpec
        from robustbench_ols.methods import build_method
        # an instance, not just the signature: a method's options() may resolve a default (LS's eps)
        _, options = build_method(self.method, dict(self.method_options))
        object.__setattr__(self, "method_options", tuple(sorted(options.items())))
        noise = NoiseSpec.parse(self.noise)
        object.__setattr__(self, "noise", str(noise))
        object.__setattr__(self, "noise_spec", noise)
        if self.schedule == "cosine":
            milestones = ()
        elif self.milestones is None:
            milestones = default_milestones(self.epochs)
        else:
            milestones = tuple(sorted(int(m) for m in self.milestones))
        object.__setattr__(self, "milestones", milestones)
        _check(self.val_labels in VAL_LABELS,
               f"unknown --val-labels {self.val_labels!r}; valid: {', '.join(VAL_LABELS)}")
        if self.val_split == 0:  # no split: its labels do not matter and must not change the run_id
            object.__setattr__(self, "val_labels", "noisy")

    @property
    def options(self) -> dict:
        return dict(self.method_options)

    @property
    def has_noisy_val(self) -> bool:
        """Whether the run holds out a validation split with noisy labels (checkpoint selection `noisy-val`)."""
        return holds_noisy_val(self.to_dict())

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        d["method_options"] = dict(self.method_options)
        d["milestones"] = list(self.milestones)
        return d

    def identity(self) -> dict:
        """The dict the run_id hashes: to_dict() under the id rule (ids.py)."""
        return without_later(self.to_dict(), LATER_RUN_FIELDS)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        d = dict(d)
        d["method_options"] = tuple(sorted(d.get("method_options", {}).items()))
        d["milestones"] = tuple(d.get("milestones", ()))
        return cls(**d)

    @property
    def run_id(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON of the spec (ids.py)."""
        return content_id(self.identity())

    def tests_at(self, epoch: int) -> bool:
        """Whether the 0-based `epoch` has a test pass: every test_every-th epoch and always the last."""
        return (epoch + 1) % self.test_every == 0 or epoch + 1 == self.epochs

    def lr_at(self, epoch: int) -> float:
        """Learning rate for a 0-based epoch (constant within an epoch)."""
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * epoch / self.epochs))
        return self.lr * self.lr_decay ** sum(epoch >= m for m in self.milestones)


def holds_noisy_val(spec: dict) -> bool:
    """Whether a run's spec (spec.json's dict) holds out a validation split with noisy labels: --noisy-val, or
    --val-split N with its default noisy labels."""
    return bool(spec.get("noisy_val")) or (spec.get("val_split", 0) > 0 and spec.get("val_labels", "noisy") == "noisy")


def default_milestones(epochs: int) -> tuple:
    """50% and 75% of the epochs (the paper's 150 and 225 of 300); none for very short runs."""
    ms = sorted({round(0.5 * epochs), round(0.75 * epochs)})
    return tuple(m for m in ms if 0 < m < epochs)


@dataclass(frozen=True)
class ExecOptions:
    """How a run is executed; recorded in spec.json, not part of the run_id."""
    device: str = "auto"
    channels_last: bool = True  # ~1.4x faster ResNet training on CPUs here; see benchmarks/
    data_root: str | None = None
    download: bool = True
    progress: bool = True
    eval_batch_size: int = 256  # 1.7x faster than 1000 on a CPU thread (benchmarks/epoch_cost.py)
    # The terminal line of the run's progress bar: None puts it below this process's other bars; a
    # matrix worker process gets its own line (1 + its number) under the grid bar.
    progress_position: int | None = None
    # Experiment trackers (trackers/): any of tensorboard, mlflow, wandb (text or tuple; stored as a tuple), and
    # the folder of their logs (None: <out>/tracking)
    log: tuple = ()
    log_dir: str | None = None
    # Numerics (models/precision.py, recorded in every run and evaluation record): TF32 on a GPU (off: IEEE
    # float32), --amp's dtype (auto: bfloat16 where the device computes it, else float16 with a gradient
    # scaler) and deterministic algorithms (bit-for-bit resume on a GPU). --compile: the training steps through
    # torch.compile (models/compiling.py; equal to eager within float rounding, recorded).
    tf32: bool = False
    amp_dtype: str = "auto"
    deterministic: bool = False
    compile: bool = False

    def __post_init__(self):
        _check(self.eval_batch_size >= 1, f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        _check(self.amp_dtype in ("auto", "bfloat16", "float16"),
               f"--amp-dtype {self.amp_dtype!r}: valid: auto, bfloat16, float16")
        object.__setattr__(self, "log", parse_trackers(self.log))  # SpecError for an unknown tracker


DEFAULT_ATTACKS = ("fgsm", "pgd")
ATTACK_STARTS = ("per-image", "per-batch")


@dataclass(frozen=True)
class EvalSpec:
    attacks: tuple = DEFAULT_ATTACKS  # attack texts (see attacks.AttackSpec.parse), canonicalised
    attack_examples: int = 0  # 0: the whole test set; N: a class-balanced subset seeded by attack_seed
    attack_seed: int = 0  # the subset and every attack's random start
    # Batch b of a per-batch-seeded attack (AutoAttack's, Square in the checks) is seeded attack_seed + b; the
    # eval_id names the batch size only where it changes numbers (ids.py).
    attack_batch_size: int = 256
    # PGD's random starts (attacks/robust.py): "per-image", one stream over the images seeded attack_seed, the same
    # for any batch size; "per-batch", batch b's seeded attack_seed + b, as every record before it existed.
    attack_starts: str = "per-image"
    n_bins: int = 15  # calibration bins
    cifar10h: bool = True  # CIFAR-10 only: the human-agreement figures
    attack_amp: bool = False  # attacks under bf16 autocast
    # The gradient-masking checks (attacks/sanity.py), whenever an attack is scored.
    checks: bool = True
    check_examples: int = DEFAULT_CHECK_EXAMPLES  # a class-balanced subset of the attacked images; 0: all
    eps_sweep: tuple = DEFAULT_SWEEP  # the checks' PGD-20 budgets, in /255 units
    # Which epoch's model is scored (selection.py): last, noisy-val or oracle.
    select: str = "last"
    # Distribution shift: "corruptions" scores generated CIFAR-10-C-style corruptions (data/corruptions.py) of a
    # class-balanced test subset of shift_examples images; corruptions () means all 15.
    shift: str = "none"
    corruptions: tuple = ()
    severities: tuple = (1, 2, 3, 4, 5)
    shift_examples: int = 1000
    # The attacks parsed once (AttackSpec objects, in order); derived from `attacks`, not part of the eval_id.
    attack_specs: tuple = dataclasses.field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        attacks = tuple(self.attacks) if not isinstance(self.attacks, str) else (self.attacks,)
        parsed = [AttackSpec.parse(a) for a in attacks]
        keys = [p.key for p in parsed]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise SpecError(f"two --attack settings record the same figure {dup[0]!r} (they differ only in "
                            "options the key does not name, such as alpha or random_start); score them in "
                            "separate `rbols eval` calls")
        object.__setattr__(self, "attacks", tuple(p.text for p in parsed))
        object.__setattr__(self, "attack_specs", tuple(parsed))
        for name in ("attack_examples", "attack_seed"):
            if getattr(self, name) < 0:
                raise SpecError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.attack_batch_size < 1:
            raise SpecError(f"--attack-batch-size must be >= 1, got {self.attack_batch_size}")
        if self.attack_starts not in ATTACK_STARTS:
            raise SpecError(f"--attack-starts {self.attack_starts!r}: valid: {', '.join(ATTACK_STARTS)}")
        if self.n_bins < 1:
            raise SpecError(f"--bins must be >= 1, got {self.n_bins}")
        sweep = tuple(sorted({float(e) if not float(e).is_integer() else int(e) for e in self.eps_sweep}))
        if not sweep or not all(0 <= e <= 255 for e in sweep):
            raise SpecError(f"--eps-sweep {','.join(map(str, self.eps_sweep)) or '(empty)'}: need one or more budgets "
                            "in /255 units between 0 and 255, such as 0,1,2,4,8,16,64")
        object.__setattr__(self, "eps_sweep", sweep)
        if self.check_examples < 0:
            raise SpecError(f"--check-examples must be >= 0, got {self.check_examples}")
        if not self.attacks:  # nothing to check
            object.__setattr__(self, "checks", False)
        check_selection(self.select)
        self._check_shift()

    def _check_shift(self) -> None:
        if self.shift not in ("none", "corruptions"):
            raise SpecError(f"--shift {self.shift!r}: valid: none, corruptions")
        object.__setattr__(self, "corruptions", tuple(self.corruptions))
        if self.shift == "none":
            return
        from robustbench_ols.data.corruptions import check_corruptions, package_version
        check_corruptions(self.corruptions, self.severities)  # 2.0 is 2; 2.5 is an error
        object.__setattr__(self, "severities", tuple(sorted({int(s) for s in self.severities})))
        if self.shift_examples < 10:
            raise SpecError(f"--shift-examples must be at least the number of classes, got {self.shift_examples}")
        package_version()  # installed, or a SpecError saying how: before anything is trained or written

    def to_dict(self) -> dict:
        """The setting as recorded (evals/<eval_id>.json's "eval"), under the id rule (ids.py)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        d["attacks"] = list(self.attacks)
        d["eps_sweep"] = list(self.eps_sweep)
        d["corruptions"], d["severities"] = list(self.corruptions), list(self.severities)
        return without_later(d, LATER_EVAL_FIELDS)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalSpec":
        d = dict(d)
        d["attacks"] = tuple(d.get("attacks", ()))
        d.setdefault("checks", False)  # a record from before the checks
        d.setdefault("attack_starts", "per-batch")  # ... from before the per-image starts
        for key in ("eps_sweep", "corruptions", "severities"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def identity(self) -> dict:
        """The dict the eval_id hashes: to_dict() with the attack batch size only where it changes numbers."""
        per_batch = self.checks or any(a.randomness == "per batch" for a in self.attack_specs)
        return attack_batch_identity(self.to_dict(), attacked=self.attack_examples, per_batch=per_batch)

    @property
    def eval_id(self) -> str:
        return content_id(self.identity())


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SpecError(message)
