"""L-inf attacks: their settings (spec.py: the registered kinds, option syntax, record keys, labels;
parameter_free.py: AutoAttack and its attacks), the robust error of a model under them image by image
(robust.py) and the checks for gradient masking (sanity.py)."""
from robustbench_ols.attacks import parameter_free  # noqa: F401  (registers autoattack, apgd-ce, apgd-dlr, apgd-t, fab-t, square)
from robustbench_ols.attacks.spec import ATTACKS, DEFAULT_EPS, FGSM, PGD, AttackSpec

_ROBUST = ("adversarial", "attack_outcomes", "fold_batchnorm", "robust_error")


def __getattr__(name):
    # robust.py imports torch (seconds): loaded on first use, so that the specifications, which the CLI
    # reads to build its options, stay light
    if name in _ROBUST:
        from robustbench_ols.attacks import robust
        return getattr(robust, name)
    raise AttributeError(f"module 'robustbench_ols.attacks' has no attribute {name!r}")


__all__ = ["ATTACKS", "DEFAULT_EPS", "FGSM", "PGD", "AttackSpec", *_ROBUST]
