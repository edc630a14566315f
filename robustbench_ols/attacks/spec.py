"""Attack settings: the registered attack kinds, their option syntax, record keys and labels.

Kept free of torch so that the run and scoring specifications (spec.py) and the CLI's help stay light;
torchattacks is imported when an attack is built.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from fractions import Fraction
from typing import ClassVar

from robustbench_ols.common.errors import SpecError
from robustbench_ols.common.registry import Registry
from robustbench_ols.common.values import parse_bool

DEFAULT_EPS = 8 / 255  # RobustBench / the OLS paper's L-inf budget
# The gradient-masking checks' settings (the checks themselves: sanity.py). Budgets of the eps sweep in
# /255 units: 0 (the eps_zero check), RobustBench's 8/255 with its halvings and one doubling, and 64/255,
# a budget that destroys any CIFAR image's content (Carlini et al. 2019, "On evaluating adversarial
# robustness", sec. 5.2: an unbounded attack must reach 100% success).
DEFAULT_SWEEP = (0, 1, 2, 4, 8, 16, 64)
DEFAULT_CHECK_EXAMPLES = 100  # images of the checks: a class-balanced subset of the attacked ones
# An attack kind is an AttackSpec subclass registered under its name: it owns its options (parsed from
# `name:key=value,...`), its record key (`pgd20_err`), its label (`PGD-20`) and its torchattacks object.
# Plugins: the entry-point group below.
ATTACKS = Registry("attack", group="robustbench_ols.attacks")


def _fraction(value: str) -> float:
    """a number or a fraction such as 8/255"""
    return float(Fraction(value))


def _boolean(value: str) -> bool:
    """true or false (or yes/no, on/off, 1/0)"""
    return parse_bool(value)


def _accepts(converter) -> str:
    """What an option's converter takes, for error messages (each of ours says it in its docstring)."""
    return "a whole number" if converter is int else converter.__doc__


@dataclass(frozen=True)
class AttackSpec:
    """One attack setting. `parse` reads the text of any registered kind; `text` writes it back
    canonically (the EvalSpec's eval_id hashes these texts)."""
    eps: float = DEFAULT_EPS
    kind: ClassVar[str] = ""
    # option -> converter from text (ValueError, KeyError or ZeroDivisionError: not valid)
    options: ClassVar[dict] = {"eps": _fraction}
    needs_nchw: ClassVar[bool] = False  # the attack's code needs NCHW-contiguous inputs
    # Whether the attack uses only the model's gradients: the gradient-masking checks (sanity.py) compare such
    # attacks with a black-box one (Square). False for Square and for AutoAttack, whose ensemble includes it.
    white_box: ClassVar[bool] = True
    # How the attack's random draws depend on the batches (attacks/robust.py): "per batch" (each batch seeded
    # seed + b: its outcomes depend on the attack batch size, which the eval_id then names), "per image" (one
    # stream over the images: they do not) or "none" (no random draw). Plugins: "per batch" unless they say.
    randomness: ClassVar[str] = "per batch"

    @staticmethod
    def parse(text: str) -> "AttackSpec":
        """`fgsm`, `pgd`, `pgd:eps=4/255,steps=50,alpha=1/255,random_start=false`."""
        kind, _, rest = text.strip().partition(":")
        if kind not in ATTACKS.known() and kind not in ATTACKS.plugin_names():
            kinds = ", ".join(f"{k} ({ATTACKS.get(k).defaults_text()})" for k in ATTACKS.names())
            raise SpecError(f"unknown attack {kind!r} in --attack {text!r}; valid: {kinds}")
        cls = ATTACKS.get(kind)  # a registered kind, or a plugin's by entry point
        values = {}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in cls.options:
                raise SpecError(f"--attack {text!r}: bad option {item!r}; {kind} takes "
                                f"{', '.join(sorted(cls.options))} as key=value")
            try:
                values[key] = cls.options[key](value)
            except (ValueError, KeyError, ZeroDivisionError):
                raise SpecError(f"--attack {text!r}: {key}={value!r} is not valid; {key} takes "
                                f"{_accepts(cls.options[key])}") from None
        spec = cls(**values)
        problem = spec.invalid()
        if problem:
            raise SpecError(f"--attack {text!r}: {problem}")
        return spec

    @staticmethod
    def from_key(key: str) -> "AttackSpec | None":
        """The attack (at its default options apart from those the key names) whose record key is `key`
        (`pgd20_eps4_err`), or None when no registered kind writes it. Asks each kind's `parse_key`."""
        for cls in [*(ATTACKS.get(kind) for kind in sorted(ATTACKS.known())), WorstCase]:
            spec = cls.parse_key(key)
            if spec is not None:
                return spec
        return None

    @classmethod
    def parse_key(cls, key: str) -> "AttackSpec | None":
        """This kind's spec whose record key is `key`, or None. The default reads the keys `key` writes when
        `name` is the kind (`noise_err`, `noise_eps4_err`), every other option at its default; a kind whose
        key names more (PGD's steps) overrides it. The contract test checks key -> spec -> key for every kind."""
        eps = cls._eps_from_key(key, cls.kind)
        return None if eps is None else cls(eps=eps)

    def invalid(self) -> str | None:
        """What is wrong with the values, or None."""
        return None if 0 <= self.eps <= 1 else "need 0 <= eps <= 1"

    @classmethod
    def defaults_text(cls) -> str:
        return ", ".join(f"{k}={_number(v) if isinstance(v, float) else str(v).lower()}"
                         for k, v in ((f.name, f.default) for f in fields(cls)))

    @property
    def name(self) -> str:
        """The key's stem: `fgsm`, `pgd20`."""
        return self.kind

    @property
    def key(self) -> str:
        """Metric name: fgsm_err, pgd20_err; pgd20_eps4_err for another budget (in /255 units)."""
        return self.name + (f"_eps{self.eps * 255:g}" if abs(self.eps - DEFAULT_EPS) > 1e-12 else "") + "_err"

    @property
    def label(self) -> str:
        """How tables name it: `FGSM`, `PGD-20`, `PGD-20 (4/255)`."""
        budget = f" ({_number(self.eps * 255)}/255)" if abs(self.eps - DEFAULT_EPS) > 1e-12 else ""
        return self.display + budget

    @property
    def display(self) -> str:
        return self.kind.upper()

    @property
    def text(self) -> str:
        """Canonical text that parses back to this spec, every option spelled (a default resolved, such as
        PGD's step): `fgsm:eps=8/255`, `pgd:eps=8/255,alpha=2/255,steps=20,random_start=true`."""
        return f"{self.kind}:" + ",".join(f"{f.name}={_text(getattr(self, f.name))}" for f in fields(self))

    def build(self, model):
        """The torchattacks object (or any callable (images, labels) -> adversarial images)."""
        raise NotImplementedError

    def perturb(self, model, x, y, seed: int):
        """Adversarial versions of x; the global RNG is already seeded with `seed` (in a fork)."""
        return self.build(model)(x, y)

    @classmethod
    def _eps_from_key(cls, key: str, stem: str):
        """The eps a key of this stem names (`{stem}_err`, `{stem}_eps4_err`), or None."""
        if key == f"{stem}_err":
            return DEFAULT_EPS
        if key.startswith(f"{stem}_eps") and key.endswith("_err"):
            try:
                return float(key[len(stem) + 4:-4]) / 255
            except ValueError:
                return None
        return None


@ATTACKS.register("fgsm")
@dataclass(frozen=True)
class FGSM(AttackSpec):
    kind: ClassVar[str] = "fgsm"
    randomness: ClassVar[str] = "none"

    def build(self, model):
        import torchattacks  # here, not at the top: it pulls in scipy (~2 s), which only an attack needs
        return torchattacks.FGSM(model, eps=self.eps)


# PGD's step when none is given: eps/4, the ratio of Madry et al. (2018)'s CIFAR-10 PGD (step 2/255 at
# 8/255; RobustBench's and the OLS paper's 8/255 setting), so that a smaller budget gets a smaller step
# instead of a step larger than its radius. At eps 0 the ball is a point and any step gives the same images.
STEP_PER_EPS = 1 / 4


@ATTACKS.register("pgd")
@dataclass(frozen=True)
class PGD(AttackSpec):
    alpha: float | None = None  # step size; None: eps * STEP_PER_EPS (resolved at construction)
    steps: int = 20
    random_start: bool = True
    kind: ClassVar[str] = "pgd"
    randomness: ClassVar[str] = "per image"
    options: ClassVar[dict] = {"eps": _fraction, "alpha": _fraction, "steps": int, "random_start": _boolean}

    def __post_init__(self):
        if self.alpha is None:  # the record and the eval_id spell the resolved step (`text`)
            object.__setattr__(self, "alpha", self.eps * STEP_PER_EPS if self.eps > 0 else DEFAULT_EPS * STEP_PER_EPS)

    @classmethod
    def defaults_text(cls) -> str:
        return super().defaults_text().replace("alpha=none", "alpha=eps/4")

    def invalid(self) -> str | None:
        ok = 0 <= self.eps <= 1 and self.steps >= 1 and self.alpha > 0
        return None if ok else "need 0 <= eps <= 1, steps >= 1 and alpha > 0"

    @property
    def name(self) -> str:
        return f"pgd{self.steps}"

    @property
    def display(self) -> str:
        return f"PGD-{self.steps}"

    def build(self, model):
        import torchattacks  # see FGSM.build
        return torchattacks.PGD(model, eps=self.eps, alpha=self.alpha, steps=self.steps,
                                random_start=self.random_start)

    @classmethod
    def parse_key(cls, key: str):
        stem = key.split("_", 1)[0]
        if not (stem.startswith("pgd") and stem[3:].isdigit()):
            return None
        eps = cls._eps_from_key(key, stem)
        return None if eps is None else cls(eps=eps, steps=int(stem[3:]))


@dataclass(frozen=True)
class WorstCase(AttackSpec):
    """Not an attack one can ask for: the per-image worst case over the attacks an evaluation ran at one
    budget (an image counts as fooled when any of them fooled it), `worst_err`."""
    kind: ClassVar[str] = "worst"

    @property
    def display(self) -> str:
        return "Worst case"


def _text(v) -> str:
    return str(v).lower() if isinstance(v, bool) else _number(v) if isinstance(v, float) else str(v)


def _number(x: float) -> str:
    """8/255 for 8/255; the shortest fraction that gives back exactly the same float, else repr."""
    frac = Fraction(x).limit_denominator(100000)
    if float(frac) == x:
        return str(frac)
    return repr(x)
