"""The regime guard: a claim about noisy labels is "inconclusive: outside the regime" where the hard-label
baseline never memorised the wrong labels (or a run stopped early), whatever the t-test says, and is
left alone where it did."""
import pandas as pd

from robustbench_ols.audit.regime import MIN_WRONG_FIT, fit_table
from robustbench_ols.audit.tables import paired_table, pooled_table
from robustbench_ols.audit.verdicts import pooled_verdicts, tally, verdicts

BASE = dict(dataset="cifar10", model="resnet8", epochs=100, epochs_planned=100, train_subset=2000)


def grid(hard_noisy_err: dict, seeds=range(4)) -> pd.DataFrame:
    """hard, new (clearly lower test error: a t-test win) and ls at noise 0 and 0.4. `hard_noisy_err`:
    the hard-label runs' noisy_err_last at 0.4 (1 - the share of wrong labels they fit) per seed."""
    rows = []
    for s in seeds:
        for rate in (0.0, 0.4):
            for method, err in (("hard", 0.40), ("ls", 0.40), ("new", 0.30)):
                noisy = hard_noisy_err[s] if method == "hard" else 0.5
                rows.append({**BASE, "run_id": f"{method}-{rate}-{s}", "method_label": method, "seed": s,
                             "noise_rate": rate, "test_err_last": err + 0.01 * s + (0.001 * s * s if method == "new" else 0),
                             "noisy_err_last": noisy if rate > 0 else float("nan")})
    return pd.DataFrame(rows)


def test_baseline_that_never_memorised_makes_the_noise_claims_inconclusive():
    df = grid({s: 0.91 for s in range(4)})  # hard labels fit 9% of the wrong labels: chance, not memorising
    t = paired_table(df[df.method_label.isin(["new", "ls"])], "new", ["ls"], records=df)
    at = t.set_index(["metric", "noise_rate"])
    # the t-test alone says "better" at 40% noise ...
    assert at.loc[("test_err_last", 0.4), "test_outcome"] == "better"
    # ... but the experiment cannot show a claim about memorising noisy labels
    assert at.loc[("test_err_last", 0.4), "outcome"] == (
        "inconclusive: outside the regime (hard labels fit 9.0% of the wrong labels on its lowest of 4 seeds; "
        "the claim needs >= 60%)")
    assert at.loc[("wrong_fit", 0.4), "outcome"].startswith("inconclusive: outside the regime (hard labels fit 9.0%")
    # without noise nothing needs memorising: the test's verdict stands
    assert at.loc[("test_err_last", 0.0), "outcome"] == "better"
    # ... and the comparison outside the regime is in no family: the family is the one inside
    assert at.loc[("test_err_last", 0.0), "family_size"] == 1 and at.loc[("test_err_last", 0.4), "family_size"] == 0
    line = next(v for v in verdicts(t, "new") if v.startswith("**test error"))
    assert "of 1 comparison, new is better in 1" in line and "The other 1: inconclusive: outside the regime" in line
    assert "at noise 0.4" in line
    assert tally(t).set_index(["label", "baseline"]).loc[("test error (last epoch)", "ls"), "outside the regime"] == 1
    # pooled: the rate outside the regime is left out; with no rate left the line says inconclusive
    pooled = pooled_table(df[df.method_label.isin(["new", "ls"])], "new", ["ls"], records=df)
    noisy = pooled[(pooled.metric == "test_err_last") & (pooled.scope == "noisy")].iloc[0]
    assert noisy.n == 0 and noisy.outcome.startswith("inconclusive: outside the regime (hard labels fit 9.0%")
    every = pooled[(pooled.metric == "test_err_last") & (pooled.scope == "all")].iloc[0]
    assert every.n == 4 and every.rates == "0" and every.outside_rates == "0.4"
    (line,) = [v for v in pooled_verdicts(pooled, "new", scope="noisy") if v.startswith("**test error")]
    assert "against ls, inconclusive: outside the regime" in line and "better" not in line


def test_baseline_that_memorised_leaves_the_verdict_alone():
    df = grid({0: 0.2, 1: 0.3, 2: 0.25, 3: 0.1})  # fits 70-90% of the wrong labels
    t = paired_table(df[df.method_label.isin(["new", "ls"])], "new", ["ls"], records=df)
    assert (t.regime == "ok").all() and (t.outcome == t.test_outcome).all()
    assert t.set_index(["metric", "noise_rate"]).loc[("test_err_last", 0.4), "outcome"] == "better"
    fits = fit_table(df)
    assert fits.fit_min.iloc[0] == 0.7 and fits.memorises.iloc[0] and fits.seeds.iloc[0] == 4


def test_one_seed_below_the_line_is_enough_to_be_outside():
    df = grid({0: 0.2, 1: 0.2, 2: 0.2, 3: 1 - MIN_WRONG_FIT + 0.05})
    t = paired_table(df[df.method_label.isin(["new", "ls"])], "new", ["ls"], records=df)
    assert t.set_index(["metric", "noise_rate"]).loc[("test_err_last", 0.4), "regime"] == "outside"


def test_no_hard_label_runs_and_unfinished_runs_are_outside():
    df = grid({s: 0.2 for s in range(4)})
    no_hard = df[df.method_label != "hard"]
    t = paired_table(no_hard, "new", ["ls"])
    assert t.set_index(["metric", "noise_rate"]).loc[("test_err_last", 0.4), "outcome"] == (
        "inconclusive: outside the regime (no hard-label run at noise 0.4 shows whether anything memorises)")
    short = df.copy()
    short.loc[short.run_id == "new-0.0-2", "epochs"] = 60  # stopped at epoch 60 of 100
    t = paired_table(short[short.method_label.isin(["new", "ls"])], "new", ["ls"], records=short)
    assert t.set_index(["metric", "noise_rate"]).loc[("test_err_last", 0.0), "outcome"] == (
        "inconclusive: outside the regime (1 run(s) stopped before the end of their schedule: new-0.0-2)")


def test_the_reference_must_cover_every_seed_and_share_the_setting():
    """A hard-label run vouches only for runs of its own setting (epochs, subset, noise kind) and seed: a
    missing hard seed, or hard runs of another setting in the same folder, leave the claim outside."""
    df = grid({s: 0.2 for s in range(4)})
    no_seed_1 = df[~((df.method_label == "hard") & (df.seed == 1))]
    t = paired_table(no_seed_1[no_seed_1.method_label.isin(["new", "ls"])], "new", ["ls"], records=no_seed_1)
    assert t.set_index(["metric", "noise_rate"]).loc[("test_err_last", 0.4), "outcome"] == (
        "inconclusive: outside the regime (no hard-label run of seed(s) 1 at noise 0.4 shows whether anything "
        "memorises)")
    other = df.copy()
    other.loc[other.method_label == "hard", "epochs"] = 10  # the hard runs are of a 10-epoch grid
    t = paired_table(other[other.method_label.isin(["new", "ls"])], "new", ["ls"], records=other)
    assert t.set_index(["metric", "noise_rate"]).loc[("test_err_last", 0.4), "regime"] == "outside"


def test_a_fit_just_below_the_line_is_not_rounded_up_to_it():
    df = grid({0: 0.2, 1: 0.2, 2: 0.2, 3: 0.404})  # seed 3 fits 59.6%
    t = paired_table(df[df.method_label.isin(["new", "ls"])], "new", ["ls"], records=df)
    assert "hard labels fit 59.6% of the wrong labels" in t.set_index(["metric", "noise_rate"]).loc[
        ("test_err_last", 0.4), "outcome"]


def test_robust_error_at_the_floor_is_inconclusive():
    """FGSM error >= 99% for every compared model: no difference in robustness can show, whatever the
    t-test says; below the floor the test's verdict stands."""
    df = grid({s: 0.2 for s in range(4)})
    df["fgsm_err"] = [0.995 + 0.001 * (m == "new") * (s % 2) for m, s in zip(df.method_label, df.seed)]
    t = paired_table(df[df.method_label.isin(["new", "ls"])], "new", ["ls"], records=df).set_index(["metric", "noise_rate"])
    assert t.loc[("fgsm_err", 0.0), "outcome"].startswith(
        "inconclusive: outside the regime (every compared model errs on >= 99% of the attacked images")
    df["fgsm_err"] = [0.5 + (0.1 + 0.002 * s) * (m == "new") + 0.01 * s for m, s in zip(df.method_label, df.seed)]
    t = paired_table(df[df.method_label.isin(["new", "ls"])], "new", ["ls"], records=df).set_index(["metric", "noise_rate"])
    assert t.loc[("fgsm_err", 0.0), "outcome"].startswith("worse") and t.loc[("fgsm_err", 0.0), "regime"] == "ok"
