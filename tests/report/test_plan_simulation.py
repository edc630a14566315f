"""The pilot-then-confirm design (audit/plan.py, audit/confirm.py) simulated end to end at the published
cpu-regime tier's spreads (plan_simulation.py): on null data its false-positive rate stays at alpha, and where
the differences are real the claims it plans come out with the power it promised."""
import math

import numpy as np
import pytest

from robustbench_ols.audit.comparison import ALPHA, POWER
from robustbench_ols.audit.plan import PLANNED
from tests.report.plan_simulation import audits_in_parallel

NULL_AUDITS = 2000
TIER_AUDITS = 300


def _decided(outcomes):
    return outcomes.str.startswith(("better", "worse"))


@pytest.fixture(scope="module")
def null():
    return audits_in_parallel("null", NULL_AUDITS)


def test_null_audits_keep_the_familywise_error_rate(null):
    fam = null.assign(false=_decided(null.outcome)).groupby(["audit", "family_key"]).false.any()
    rate, se = fam.mean(), math.sqrt(ALPHA * (1 - ALPHA) / len(fam))
    print(f"{NULL_AUDITS} null audits, {len(fam)} families: family-wise false-positive rate {rate:.4f} "
          f"(alpha {ALPHA}, Monte-Carlo SE {se:.4f})")
    assert rate <= ALPHA + 3 * se


def test_null_tests_reject_at_their_level_not_more(null):
    """Not vacuous: the plan sends thousands of null claims to a confirmatory test (pilot seeds that looked
    different, or equivalent), and each false positive is within what the tests' levels allow."""
    tested = null[null.status.eq(PLANNED) & null.p.notna()]
    assert len(tested) >= 1000
    expected = tested.plan_alpha.sum()
    false = int(_decided(tested.outcome).sum())
    print(f"{len(tested)} null claims tested on confirmation seeds: {false} false positives, "
          f"{expected:.1f} expected at their Bonferroni levels")
    assert false <= expected + 3 * math.sqrt(expected)


def test_real_differences_come_out_with_the_promised_power():
    t = audits_in_parallel("tier", TIER_AUDITS)
    planned = t[t.status.eq(PLANNED) & t.plan_for.eq("difference")]
    truth = planned.merge(_truth(), on=["metric", "baseline", "noise_rate"], how="left")
    per_rate = truth[truth.kind.eq("per-rate")]
    right = np.where(per_rate.true_diff < 0, per_rate.outcome.eq("better"), per_rate.outcome.eq("worse"))
    power, se = right.mean(), math.sqrt(POWER * (1 - POWER) / len(right))
    print(f"{TIER_AUDITS} audits at the tier's differences: {len(per_rate)} per-rate claims planned for a "
          f"difference, {power:.3f} decided in the true direction (promised {POWER})")
    assert len(per_rate) >= 1000 and power >= POWER - 3 * se
    pooled = truth[truth.kind.eq("pooled")]
    assert pooled.outcome.str.startswith(("better", "worse")).mean() >= POWER


def _truth():
    from tests.report.plan_simulation import tier
    return tier()[["metric", "baseline", "noise_rate", "mean_diff"]].rename(columns={"mean_diff": "true_diff"})
