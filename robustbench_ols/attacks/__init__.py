"""L-inf attacks: their settings (spec.py: the registered kinds, option syntax, record keys, labels) and
the robust error of a model under them (robust.py, through torchattacks)."""
from .spec import ATTACKS, DEFAULT_EPS, FGSM, PGD, AttackSpec

_ROBUST = ("adversarial", "fold_batchnorm", "robust_error")


def __getattr__(name):
    # robust.py imports torch (seconds): loaded on first use, so that the specifications, which the CLI
    # reads to build its options, stay light
    if name in _ROBUST:
        from . import robust
        return getattr(robust, name)
    raise AttributeError(f"module 'robustbench_ols.attacks' has no attribute {name!r}")


__all__ = ["ATTACKS", "DEFAULT_EPS", "FGSM", "PGD", "AttackSpec", *_ROBUST]
