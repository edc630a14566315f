"""Calibration: ECE and its variants, NLL, Brier score, reliability bins, temperature scaling.

Metrics are pure functions of (probs (N, K) rows summing to 1, labels (N,) ints) with keyword-only
options, returning Python floats; torch tensors (any device) or numpy arrays are accepted. The ECE
convention is Guo et al. (ICML 2017): top-label confidence, 15 equal-width bins (lower, upper], L1,
weighted by bin size; a confidence of exactly 1.0 lies in the last bin (torchmetrics, unlike this,
gives it an extra bin). See `metrics` for the details of each variant and `temperature` for the fit.
"""
from robustbench_ols.scoring.calibration.metrics import (
    NORMS,
    ReliabilityTable,
    adaptive_ece,
    brier,
    calibration_metrics,
    classwise_ece,
    ece,
    mce,
    nll,
    reliability_table,
)
from robustbench_ols.scoring.calibration.temperature import apply_temperature, fit_temperature

__all__ = ["NORMS", "ReliabilityTable", "adaptive_ece", "apply_temperature", "brier",
           "calibration_metrics", "classwise_ece", "ece", "fit_temperature", "mce", "nll",
           "reliability_table"]
