"""The parameter-free attacks of AutoAttack (Croce & Hein, ICML 2020) and the ensemble itself, from the
official code: the `pyautoattack` package, whose attack files (APGD, FAB, Square) are those of
fra31/auto-attack at commit a392200 line for line (diffed: whitespace and relative imports only); its
`AutoAttack` class is the same ensemble behind a keyword API that logs instead of printing.
torchattacks also ships an AutoAttack, re-implemented (its APGD-T, FAB and Square differ from the
reference in details such as target choice and restarts), so RobustBench-comparable numbers come from
the reference code here.

Kinds (`--attack`), each L-inf with eps in [0, 1]:
  autoattack[:version=standard|plus,eps=8/255]  the ensemble: APGD-CE, APGD-T, FAB-T, Square (standard)
  apgd-ce[:steps=100,restarts=1]  apgd-dlr[:steps=100,restarts=1]
  apgd-t[:steps=100,targets=9]    fab-t[:steps=100,targets=9]    square[:queries=5000]
Record keys: `aa_err`, `apgd_ce_err`, ...; an option away from its default is named in the key
(`square_queries1000_err`, `aa_plus_err`), the budget as for FGSM/PGD (`aa_eps2_err`).

The official attacks reshape gradients with `.view`, which fails on channels_last tensors: they are
given NCHW inputs and the model converts them (`robust.ChannelsLastInput`), so a channels_last copy
keeps its speed. Their `logger` warnings (AutoAttack's own checks: zero gradients, Square stronger than the
rest, a randomised model) are kept and written into the evaluation record's notes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import ClassVar

from robustbench_ols.attacks.spec import ATTACKS, DEFAULT_EPS, AttackSpec, _fraction

VERSIONS = ("standard", "plus")  # "rand" is for randomised defences, which this suite does not train


@dataclass(frozen=True)
class _Official(AttackSpec):
    """A kind run by the official code, on NCHW inputs; `stem` is its key's stem."""
    stem: ClassVar[str] = ""
    needs_nchw: ClassVar[bool] = True

    @property
    def name(self) -> str:
        tags = "".join(f"_{f.name}{getattr(self, f.name)}" for f in fields(self)
                       if f.name != "eps" and getattr(self, f.name) != f.default)
        return self.stem + tags

    @property
    def display(self) -> str:
        return self.kind.upper()

    def invalid(self) -> str | None:
        counts = [f.name for f in fields(self) if type(getattr(self, f.name)) is int]
        ok = 0 <= self.eps <= 1 and all(getattr(self, k) >= 1 for k in counts)
        return None if ok else "need 0 <= eps <= 1" + "".join(f", {k} >= 1" for k in counts)

    @classmethod
    def parse_key(cls, key: str):
        """The spec whose key is `key` (`apgd_ce_steps50_eps2_err`), or None."""
        m = re.fullmatch(re.escape(cls.stem) + r"((?:_[a-z]+\d+(?:\.\d+)?)*)_err", key)
        if not m:
            return None
        known = {f.name for f in fields(cls)}
        values = {}
        for tag in filter(None, m.group(1).split("_")):
            name, number = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", tag).groups()
            if name not in known:
                return None
            values[name] = float(number) / 255 if name == "eps" else int(number)
        return cls(**{"eps": DEFAULT_EPS, **values})


@ATTACKS.register("apgd-ce")
@dataclass(frozen=True)
class APGDCE(_Official):
    steps: int = 100
    restarts: int = 1
    kind: ClassVar[str] = "apgd-ce"
    stem: ClassVar[str] = "apgd_ce"
    loss: ClassVar[str] = "ce"
    options: ClassVar[dict] = {"eps": _fraction, "steps": int, "restarts": int}

    def perturb(self, model, x, y, seed):
        from pyautoattack.autopgd_base import APGDAttack
        return APGDAttack(model, n_iter=self.steps, norm="Linf", n_restarts=self.restarts, eps=self.eps,
                          seed=seed, loss=self.loss, device=x.device).perturb(x, y)


@ATTACKS.register("apgd-dlr")
@dataclass(frozen=True)
class APGDDLR(APGDCE):
    kind: ClassVar[str] = "apgd-dlr"
    stem: ClassVar[str] = "apgd_dlr"
    loss: ClassVar[str] = "dlr"


@ATTACKS.register("apgd-t")
@dataclass(frozen=True)
class APGDT(_Official):
    steps: int = 100
    targets: int = 9
    kind: ClassVar[str] = "apgd-t"
    stem: ClassVar[str] = "apgd_t"
    options: ClassVar[dict] = {"eps": _fraction, "steps": int, "targets": int}

    def perturb(self, model, x, y, seed):
        from pyautoattack.autopgd_base import APGDAttack_targeted
        return APGDAttack_targeted(model, n_iter=self.steps, norm="Linf", eps=self.eps, seed=seed,
                                   n_target_classes=self.targets, device=x.device).perturb(x, y)


@ATTACKS.register("fab-t")
@dataclass(frozen=True)
class FABT(APGDT):
    kind: ClassVar[str] = "fab-t"
    stem: ClassVar[str] = "fab_t"

    def perturb(self, model, x, y, seed):
        from pyautoattack.fab_pt import FABAttack_PT
        return FABAttack_PT(model, norm="Linf", n_iter=self.steps, eps=self.eps, seed=seed, targeted=True,
                            n_target_classes=self.targets, device=x.device).perturb(x, y)


@ATTACKS.register("square")
@dataclass(frozen=True)
class Square(_Official):
    queries: int = 5000
    kind: ClassVar[str] = "square"
    stem: ClassVar[str] = "square"
    white_box: ClassVar[bool] = False  # score-based: queries the model's outputs, never its gradients
    options: ClassVar[dict] = {"eps": _fraction, "queries": int}

    @property
    def display(self) -> str:
        return "Square"

    def perturb(self, model, x, y, seed):
        from pyautoattack.square import SquareAttack
        # AutoAttack's settings for its Square run (p_init 0.8, one restart, no rescaled schedule)
        return SquareAttack(model, norm="Linf", n_queries=self.queries, eps=self.eps, p_init=.8, n_restarts=1,
                            seed=seed, resc_schedule=False, device=x.device).perturb(x, y)


def _version(text: str) -> str:
    """standard or plus"""
    if text not in VERSIONS:
        raise ValueError(text)
    return text


@ATTACKS.register("autoattack")
@dataclass(frozen=True)
class AutoAttackSpec(_Official):
    version: str = "standard"
    kind: ClassVar[str] = "autoattack"
    stem: ClassVar[str] = "aa"
    white_box: ClassVar[bool] = False  # the ensemble includes Square
    options: ClassVar[dict] = {"eps": _fraction, "version": _version}

    @property
    def name(self) -> str:
        return "aa" if self.version == "standard" else f"aa_{self.version}"

    @property
    def display(self) -> str:
        return "AutoAttack" + ("" if self.version == "standard" else f" ({self.version})")

    @classmethod
    def parse_key(cls, key: str):
        for version in VERSIONS:
            stem = "aa" if version == "standard" else f"aa_{version}"
            eps = cls._eps_from_key(key, stem)
            if eps is not None:
                return cls(eps=eps, version=version)
        return None

    def perturb(self, model, x, y, seed):
        from pyautoattack import AutoAttack
        adversary = AutoAttack(model, eps=self.eps, norm="Linf", version=self.version, seed=seed, device=x.device)
        return adversary.run_standard_evaluation(x, y, batch_size=len(x))[0]
