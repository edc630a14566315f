"""The attack contract (attacks/spec.py), for every registered attack kind like the methods' contract test: its
text parses back to itself, its record key parses back to a spec with the same key (at the default budget and at
another), its options are its fields, and it says whether it is white-box. A kind from outside the package that
writes no key parser gets the default one; `AttackSpec.from_key`, the dispatcher, never recurses."""
from dataclasses import FrozenInstanceError, dataclass, fields
from typing import ClassVar

import pytest

from robustbench_ols.attacks import ATTACKS, AttackSpec
from robustbench_ols.attacks.spec import FGSM, WorstCase


@pytest.mark.parametrize("kind", ATTACKS.names())
def test_every_registered_attack_meets_the_contract(kind):
    cls = ATTACKS.get(kind)
    assert issubclass(cls, AttackSpec) and cls.kind == kind
    assert set(cls.options) <= {f.name for f in fields(cls)} and "eps" in cls.options
    assert isinstance(cls.white_box, bool) and isinstance(cls.needs_nchw, bool)
    assert cls.build is not AttackSpec.build or cls.perturb is not AttackSpec.perturb
    for text in (kind, f"{kind}:eps=4/255"):
        spec = AttackSpec.parse(text)
        with pytest.raises(FrozenInstanceError):
            spec.eps = 0.5
        assert AttackSpec.parse(spec.text) == spec and spec.text.startswith(f"{kind}:")
        again = AttackSpec.from_key(spec.key)
        assert again is not None and type(again) is cls and again.key == spec.key, (text, spec.key)
        assert spec.label and all(f.name in cls.defaults_text() for f in fields(cls))
    assert AttackSpec.parse(f"{kind}:eps=4/255").key.endswith("_eps4_err")


def test_which_attacks_are_white_box():
    assert {k for k in ATTACKS.names() if not ATTACKS.get(k).white_box} == {"square", "autoattack"}


@dataclass(frozen=True)
class Blur(AttackSpec):
    """A toy kind with no key parser of its own (registered only inside the test)."""
    kind: ClassVar[str] = "blur"

    def build(self, model):
        return lambda x, y: x


def test_a_kind_without_a_key_parser_uses_the_default_and_nothing_recurses():
    ATTACKS.register("blur", Blur)
    try:
        assert AttackSpec.from_key("blur_eps2_err") == Blur(eps=2 / 255)
        assert Blur.from_key("fgsm_err") == FGSM()  # the dispatcher, whichever class it is asked through
        assert Blur.parse_key("fgsm_err") is None and AttackSpec.from_key("no_such_err") is None
        assert AttackSpec.from_key("worst_eps2_err") == WorstCase(eps=2 / 255)
    finally:
        ATTACKS.unregister("blur")
