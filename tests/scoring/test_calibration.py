"""Calibration metrics and temperature scaling: hand-computed cases (bin edges, confidence 1.0),
agreement with torchmetrics away from the edges, invariants, and temperature scaling."""
import math

import numpy as np
import pytest
import torch

from robustbench_ols.scoring.calibration import (
    adaptive_ece,
    apply_temperature,
    brier,
    calibration_metrics,
    classwise_ece,
    ece,
    fit_temperature,
    mce,
    nll,
    reliability_table,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Case A, K = 3, 5 bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]; confidences on edges.
PROBS_A = [[0.4, 0.3, 0.3],     # conf 0.4 -> (.2, .4], correct
           [0.2, 0.6, 0.2],     # conf 0.6 -> (.4, .6], wrong (label 0)
           [1.0, 0.0, 0.0],     # conf 1.0 -> (.8, 1], correct
           [0.1, 0.1, 0.8],     # conf 0.8 -> (.6, .8], correct
           [0.9, 0.05, 0.05]]   # conf 0.9 -> (.8, 1], wrong (label 1)
LABELS_A = [0, 0, 0, 2, 1]
# Bins: (.2,.4] gap .6; (.4,.6] gap .6; (.6,.8] gap .2; (.8,1] conf .95 acc .5 gap .45 (2 samples).


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ece_hand_computed_with_edges(dtype):
    p, y = torch.tensor(PROBS_A, dtype=dtype), torch.tensor(LABELS_A)
    assert ece(p, y, n_bins=5) == pytest.approx((0.6 + 0.6 + 0.2 + 2 * 0.45) / 5, abs=1e-7)
    assert ece(p, y, n_bins=5, norm="max") == pytest.approx(0.6, abs=1e-7)
    assert mce(p, y, n_bins=5) == pytest.approx(0.6, abs=1e-7)
    l2 = math.sqrt((0.36 + 0.36 + 0.04 + 2 * 0.45 ** 2) / 5)
    assert ece(p, y, n_bins=5, norm="l2") == pytest.approx(l2, abs=1e-7)
    t = reliability_table(p, y, n_bins=5)
    assert t.count.tolist() == [0, 1, 1, 1, 2]
    assert math.isnan(t.confidence[0]) and math.isnan(t.accuracy[0])
    np.testing.assert_allclose(t.confidence[1:], [0.4, 0.6, 0.8, 0.95], atol=1e-7)
    np.testing.assert_allclose(t.accuracy[1:], [1, 0, 1, 0.5])
    np.testing.assert_allclose(t.lower, [0, .2, .4, .6, .8])
    np.testing.assert_allclose(t.upper, [.2, .4, .6, .8, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_edge_goes_to_the_bin_below_it(dtype):
    # Top-label confidence exactly k/5 for k = 1..5 (K = 5 so that 0.2 can be a top label).
    rows = [[0.2] * 5, [0.4, 0.15, 0.15, 0.15, 0.15], [0.6, 0.1, 0.1, 0.1, 0.1],
            [0.8, 0.05, 0.05, 0.05, 0.05], [1.0, 0, 0, 0, 0]]
    t = reliability_table(torch.tensor(rows, dtype=dtype), torch.zeros(5, dtype=torch.long), n_bins=5)
    assert t.count.tolist() == [1, 1, 1, 1, 1]
    # With the default 15 bins, 1.0 lands in the last bin (14/15, 1], not in an extra one.
    t15 = reliability_table(torch.tensor([[1.0, 0.0, 0.0]], dtype=dtype), [0])
    assert len(t15.count) == 15 and t15.count[-1] == 1 and t15.upper[-1] == 1.0


def test_one_bin_is_the_gap_between_mean_accuracy_and_mean_confidence():
    p, y = torch.tensor(PROBS_A), torch.tensor(LABELS_A)
    conf, correct = torch.tensor([.4, .6, 1., .8, .9]), torch.tensor([1., 0, 1, 1, 0])
    assert ece(p, y, n_bins=1) == pytest.approx(abs(correct.mean() - conf.mean()).item(), abs=1e-7)


def test_adaptive_ece_hand_computed():
    # Sorted confidences .4 .5 | .6 .7 | .9 1.0 in 3 equal-mass bins; given here in shuffled order.
    rows = {0.4: ([0.4, 0.3, 0.3], 0), 0.5: ([0.5, 0.3, 0.2], 1), 0.6: ([0.2, 0.6, 0.2], 1),
            0.7: ([0.1, 0.2, 0.7], 2), 0.9: ([0.05, 0.9, 0.05], 0), 1.0: ([0.0, 0.0, 1.0], 2)}
    order = [0.9, 0.4, 1.0, 0.6, 0.5, 0.7]
    p = torch.tensor([rows[c][0] for c in order])
    y = torch.tensor([rows[c][1] for c in order])
    # {.4 ok, .5 wrong}: gap .05; {.6 ok, .7 ok}: gap .35; {.9 wrong, 1.0 ok}: gap .45.
    assert adaptive_ece(p, y, n_bins=3) == pytest.approx((0.05 + 0.35 + 0.45) / 3, abs=1e-7)
    # N = 7, 3 bins: sizes 3, 2, 2 (numpy.array_split). Add a wrong .35 row to the low end.
    p7 = torch.cat([p, torch.tensor([[0.35, 0.35, 0.3]])])
    y7 = torch.cat([y, torch.tensor([2])])
    # {.35 w, .4 ok, .5 w}: conf 1.25/3, acc 1/3; {.6 ok, .7 ok}: .35; {.9 w, 1 ok}: .45.
    want = (3 * abs(1.25 / 3 - 1 / 3) + 2 * 0.35 + 2 * 0.45) / 7
    assert adaptive_ece(p7, y7, n_bins=3) == pytest.approx(want, abs=1e-7)
    # Fewer samples than bins: each sample is its own bin, so aece = mean |correct - conf|.
    assert adaptive_ece(p[:2], y[:2], n_bins=15) == pytest.approx((0.9 + 0.6) / 2, abs=1e-7)


def test_classwise_ece_hand_computed_with_zeros_and_ones():
    p = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.0, 0.4, 0.6], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 1, 2])
    # class 0: p0 = .6 .2 0 1 -> bins {.2, 0} (0 in the first bin) gap .1 x2, {.6} .4, {1.0} 1 -> 1.6/4
    # class 1: p1 = .4 .8 .4 0 -> {.4, .4} |.4 - .5| x2, {.8} .2, {0} 0 -> .4/4
    # class 2: p2 = 0 0 .6 0 -> {0, 0, 0} |0 - 1/3| x3, {.6} .6 -> 1.6/4
    assert classwise_ece(p, y, n_bins=5) == pytest.approx((0.4 + 0.1 + 0.4) / 3, abs=1e-7)


def test_nll_and_brier_hand_computed():
    p, y = torch.tensor(PROBS_A, dtype=torch.float64), torch.tensor(LABELS_A)
    py = [0.4, 0.2, 1.0, 0.8, 0.05]
    assert nll(p, y) == pytest.approx(-sum(math.log(v) for v in py) / 5, rel=1e-12)
    # Per sample: .36+.09+.09, .64+.36+.04, 0, .01+.01+.04, .81+.9025+.0025.
    assert brier(p, y) == pytest.approx((0.54 + 1.04 + 0 + 0.06 + 1.715) / 5, rel=1e-12)
    # Extremes of the sum form: 0 when confident and right, 2 when confident and wrong.
    one = torch.tensor([[1.0, 0.0, 0.0]])
    assert brier(one, [0]) == 0.0 and brier(one, [1]) == pytest.approx(2.0)
    # A zero probability on the label is clamped, not infinite.
    assert nll(one, [1]) == pytest.approx(-math.log(1e-12))
    assert nll(one, [1], eps=1e-6) == pytest.approx(-math.log(1e-6))


def test_numpy_inputs_and_calibration_metrics_keys():
    p, y = np.array(PROBS_A), np.array(LABELS_A)
    m = calibration_metrics(p, y, n_bins=5)
    assert set(m) == {"ece", "mce", "aece", "cw_ece", "nll", "brier"}
    assert all(type(v) is float for v in m.values())
    t = torch.tensor(PROBS_A, dtype=torch.float64)
    assert m == {"ece": ece(t, LABELS_A, n_bins=5), "mce": mce(t, LABELS_A, n_bins=5),
                 "aece": adaptive_ece(t, LABELS_A, n_bins=5),
                 "cw_ece": classwise_ece(t, LABELS_A, n_bins=5), "nll": nll(t, LABELS_A),
                 "brier": brier(t, LABELS_A)}


@pytest.mark.parametrize("bad, match", [
    (dict(probs=torch.randn(4, 3)), "probabilities"),          # logits, not probabilities
    (dict(probs=torch.full((4, 3), 0.5)), "probabilities"),     # rows sum to 1.5
    (dict(labels=torch.tensor([0, 1, 2, 3])), r"\[0, K\)"),
    (dict(labels=torch.tensor([0, 1])), "shape"),
    (dict(labels=torch.tensor([0.0, 1.0, 2.0, 0.0])), "integer"),
    (dict(probs=torch.ones(4)), "shape"),
    (dict(probs=torch.tensor([[float("nan"), 0.5, 0.5]] * 4)), "probabilities"),
])
def test_bad_inputs_are_rejected(bad, match):
    args = dict(probs=torch.full((4, 3), 1 / 3), labels=torch.tensor([0, 1, 2, 0]))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        ece(args["probs"], args["labels"])
    with pytest.raises(ValueError, match="norm"):
        ece(torch.full((4, 3), 1 / 3), [0, 1, 2, 0], norm="l3")
    with pytest.raises(ValueError, match="n_bins"):
        ece(torch.full((4, 3), 1 / 3), [0, 1, 2, 0], n_bins=0)


@pytest.mark.parametrize("k", [3, 4, 10])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_agrees_with_torchmetrics_away_from_edges(k, norm):
    from torchmetrics.classification import MulticlassCalibrationError
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(2000, k, generator=g, dtype=torch.float64) * 2
    p = torch.softmax(logits, 1)
    y = torch.randint(0, k, (2000,), generator=g)
    # No confidence within 1e-9 of an edge i/15, where the two bin conventions differ.
    c = p.max(1).values * 15
    assert ((c - c.round()).abs() > 1e-9).all()
    want = MulticlassCalibrationError(num_classes=k, n_bins=15, norm=norm)(p, y).item()
    assert ece(p, y, norm=norm) == pytest.approx(want, abs=1e-6)


def test_confidence_one_differs_from_torchmetrics_by_design():
    """torchmetrics gives confidence 1.0 its own extra bin (issue 3510); here it shares the last
    bin (14/15, 1] with 0.95, as Guo et al.'s (lower, upper] bins require."""
    from torchmetrics.classification import MulticlassCalibrationError
    p = torch.tensor([[1.0, 0.0, 0.0],      # conf 1.0, wrong
                      [0.95, 0.03, 0.02],   # conf .95, right
                      [0.5, 0.3, 0.2]])     # conf .5, right
    y = torch.tensor([1, 0, 0])
    ours = (2 * abs(0.5 - 0.975) + 0.5) / 3          # last bin: conf .975, acc .5
    theirs = (1.0 + 0.05 + 0.5) / 3                    # 1.0 alone (gap 1), .95 alone (gap .05)
    assert ece(p, y) == pytest.approx(ours, abs=1e-6)
    tm = MulticlassCalibrationError(num_classes=3, n_bins=15, norm="l1")(p, y).item()
    assert tm == pytest.approx(theirs, abs=1e-6)
    assert mce(p, y) == pytest.approx(0.5, abs=1e-6)   # torchmetrics' max norm would give 1.0


def test_perfectly_calibrated_predictions_have_ece_near_zero():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(200_000, 10, generator=g) * 2, 1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)  # labels drawn from the predictions
    m = calibration_metrics(p, y)
    assert m["ece"] < 0.01 and m["aece"] < 0.01 and m["cw_ece"] < 0.01
    # The same predictions against labels they do not predict are badly calibrated.
    assert ece(p, (y + 1) % 10) > 0.3


def test_reliability_table_matches_ece():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(3000, 4, generator=g) * 3, 1)
    y = torch.randint(0, 4, (3000,), generator=g)
    t = reliability_table(p, y)
    assert t.count.sum() == 3000 and len(t.rows()) == 15
    filled = t.count > 0
    assert np.isnan(t.accuracy[~filled]).all() and np.isnan(t.confidence[~filled]).all()
    assert not np.isnan(t.gap[filled]).any()
    assert np.all((t.confidence[filled] > t.lower[filled]) & (t.confidence[filled] <= t.upper[filled]))
    w = t.count[filled] / 3000
    assert ece(p, y) == pytest.approx(float((w * np.abs(t.gap[filled])).sum()), abs=1e-12)
    assert mce(p, y) == pytest.approx(float(np.abs(t.gap[filled]).max()), abs=1e-12)
    row = t.rows()[-1]
    assert set(row) == {"lower", "upper", "count", "confidence", "accuracy"} and row["upper"] == 1.0


def _overconfident(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5  # calibrated logits: labels are drawn from softmax(z)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z, y


def test_temperature_scaling_recovers_temperature_and_improves_calibration():
    z, y = _overconfident(40_000, 10, seed=2)
    val, test = slice(0, 20_000), slice(20_000, None)
    over = 5 * z  # a deliberately over-confident model
    t = fit_temperature(over[val], y[val])
    assert t == pytest.approx(5.0, rel=0.05)
    before, after = torch.softmax(over[test], 1), torch.softmax(apply_temperature(over[test], t), 1)
    assert nll(after, y[test]) < nll(before, y[test]) - 0.5
    assert ece(after, y[test]) < ece(before, y[test]) / 3 and ece(after, y[test]) < 0.02
    assert torch.equal(after.argmax(1), before.argmax(1))  # accuracy is untouched


def test_temperature_scaling_underconfident_deterministic_numpy():
    z, y = _overconfident(10_000, 4, seed=3)
    t = fit_temperature(z.numpy() / 2, y.numpy())  # under-confident: T ~ 0.5
    assert t == pytest.approx(0.5, rel=0.05)
    assert fit_temperature(z.numpy() / 2, y.numpy()) == t
    scaled = apply_temperature(z.numpy(), 2.0)
    assert isinstance(scaled, np.ndarray) and np.allclose(scaled, z.numpy() / 2)
    # The fitted T is a stationary point: nearby temperatures have a higher validation NLL.
    f = lambda temp: nll(torch.softmax(z.double() / 2 / temp, 1), y)  # noqa: E731
    assert f(t) <= min(f(t * 1.02), f(t / 1.02))


def test_temperature_bounds_and_errors():
    y = torch.tensor([0, 1, 2, 0])
    # Logits unrelated to (here: against) the labels: the NLL keeps falling as T grows.
    anti = -10 * torch.nn.functional.one_hot(y, 3).float()
    assert fit_temperature(anti, y) == 100.0
    # Every sample right with a margin: the NLL keeps falling as T shrinks.
    assert fit_temperature(10 * torch.nn.functional.one_hot(y, 3).float(), y) == 0.01
    assert fit_temperature(torch.zeros(4, 3), y) == 1.0  # flat logits: nothing to fit
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(torch.zeros(4), y)
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(torch.full((4, 3), float("nan")), y)
