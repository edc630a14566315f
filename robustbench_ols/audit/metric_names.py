"""The names of the audited metrics that come in families: a robustness metric is measured at every budget the
attacks ran at, `pgd_err` at 8/255 (RobustBench's and the OLS paper's budget, no suffix), `pgd_eps2_err` at
2/255, and so on; the test error at each checkpoint selection. Plain strings, no imports: the command line
reads them for its margins."""
from __future__ import annotations

ROBUSTNESS_METRICS = ("fgsm_err", "pgd_err", "aa_err", "robust_err")
DEFAULT_BUDGET = 8  # /255: a robustness metric without _eps in its name


# The test error at the epoch a checkpoint selection chooses (selection.py): one family, `test_err_last`'s,
# whose margin and regime it shares.
TEST_ERRORS = ("test_err_last", "test_err_noisy_val", "test_err_oracle")


def metric_family(metric: str) -> str:
    """`pgd_err` for `pgd_eps2_err` (a robustness metric at another budget), `test_err_last` for the test error
    at another checkpoint selection, else the metric itself."""
    if metric in TEST_ERRORS:
        return TEST_ERRORS[0]
    stem, sep, rest = metric.partition("_eps")
    return f"{stem}_err" if sep and f"{stem}_err" in ROBUSTNESS_METRICS and rest.endswith("_err") else metric


def metric_budget(metric: str) -> float | None:
    """The budget of a robustness metric in /255 units (8 for `pgd_err`, 2 for `pgd_eps2_err`), else None."""
    family = metric_family(metric)
    if family not in ROBUSTNESS_METRICS:
        return None
    return DEFAULT_BUDGET if family == metric else float(metric[len(family) - len("_err"):-len("_err")][len("_eps"):])


def at_budget(family: str, budget: float) -> str:
    """The metric of a robustness family at a budget in /255 units: `pgd_err`, `pgd_eps2_err`."""
    return family if budget == DEFAULT_BUDGET else f"{family[:-len('_err')]}_eps{budget:g}_err"
