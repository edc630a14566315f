"""Label noise: exact counts, uniform other-class draws, rates, maps, determinism, human labels."""
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data.noise import NoiseSpec, make_noisy_labels, noisy_labels_for, transition_matrix

K = 10
CLEAN = np.repeat(np.arange(K), 5000)  # 50,000 balanced labels, like CIFAR-10


def noisy(spec, seed=0, clean=CLEAN, k=K, dataset="cifar10", **kw):
    return make_noisy_labels(clean, k, spec, seed, dataset=dataset, **kw)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_exact_count_and_never_true_class(rate):
    r = noisy(f"symmetric:{rate}")
    changed = r.labels != CLEAN
    assert changed.sum() == round(rate * len(CLEAN))  # exactly round(R*N), each one wrong
    assert np.array_equal(changed, r.is_noisy)
    assert r.rate == pytest.approx(rate)


def test_symmetric_other_class_draw_is_uniform():
    r = noisy("symmetric:0.6", seed=3)
    offsets = (r.labels - CLEAN)[r.is_noisy] % K  # 1..K-1, uniform if the other class is uniform
    counts = np.bincount(offsets, minlength=K)
    assert counts[0] == 0
    assert stats.chisquare(counts[1:]).pvalue > 1e-3
    # Per class as well: the wrong labels of class 3 spread evenly over the 9 other classes.
    c3 = np.bincount(r.labels[(CLEAN == 3) & r.is_noisy], minlength=K)
    assert c3[3] == 0 and stats.chisquare(np.delete(c3, 3)).pvalue > 1e-3


def test_symmetric_all_rate_is_r_times_k_minus_1_over_k():
    r = noisy("symmetric-all:0.5", seed=1)
    expected = 0.5 * (K - 1) / K  # 0.45: a resample keeps the true class 1/K of the time
    sd = np.sqrt(expected * (1 - expected) / len(CLEAN))
    assert abs(r.rate - expected) < 5 * sd


def test_determinism_by_seed():
    a, b, c = noisy("symmetric:0.4", 7), noisy("symmetric:0.4", 7), noisy("symmetric:0.4", 8)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_pairflip_and_transition_matrix():
    r = noisy("pairflip:0.3", seed=2)
    wrong = r.is_noisy
    assert np.array_equal(r.labels[wrong], (CLEAN[wrong] + 1) % K)
    assert abs(r.rate - 0.3) < 0.02
    assert np.allclose(r.T.sum(1), 1)
    assert np.allclose(np.diag(r.T) + np.diag(np.roll(r.T, -1, axis=1)), 1)  # only i -> i, i -> i+1
    assert r.T[4, 5] == pytest.approx(np.mean(r.labels[CLEAN == 4] == 5))


def test_asymmetric_cifar10_map():
    r = noisy("asymmetric:0.4", seed=0)
    moves = {(int(a), int(b)) for a, b in zip(CLEAN[r.is_noisy], r.labels[r.is_noisy])}
    assert moves == {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}  # truck->auto, bird->plane, deer->horse, cat<->dog
    for src in (9, 2, 4, 3, 5):
        assert abs(np.mean(r.is_noisy[CLEAN == src]) - 0.4) < 0.04
    assert not r.is_noisy[np.isin(CLEAN, [0, 1, 6, 7, 8])].any()


def test_asymmetric_cifar100_next_class_in_superclass():
    rng = np.random.default_rng(0)
    fine_to_coarse = rng.permutation(np.repeat(np.arange(20), 5))  # scrambled, as in real CIFAR-100
    clean = np.repeat(np.arange(100), 50)
    r = noisy("asymmetric:0.5", clean=clean, k=100, dataset="cifar100", fine_to_coarse=fine_to_coarse)
    for src in range(100):
        dst = np.unique(r.labels[(clean == src) & r.is_noisy])
        members = np.flatnonzero(fine_to_coarse == fine_to_coarse[src])
        nxt = members[(np.searchsorted(members, src) + 1) % 5]
        assert list(dst) == [nxt]
    assert np.allclose(r.T.sum(1), 1)


def test_transition_matrix_rows_sum_to_one_with_empty_class():
    t = transition_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    assert np.allclose(t, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]])  # class 2 absent: identity row


def test_none_is_clean():
    r = noisy("none")
    assert r.rate == 0 and not r.is_noisy.any() and np.allclose(r.T, np.eye(K))


@pytest.mark.parametrize("text, fragment", [
    ("symmetric:1.0", "[0, 1)"), ("symmetric:-0.1", "[0, 1)"), ("pairflip:2", "[0, 1)"),
    ("symmetric:abc", "must be a number"), ("gaussian:0.2", "unknown noise kind 'gaussian'"),
    ("human", "needs a name"), ("none:0.2", "takes no argument"),
])
def test_bad_specs_say_what_is_valid(text, fragment):
    with pytest.raises(SpecError, match="valid|must|needs|takes") as e:
        NoiseSpec.parse(text)
    assert fragment in str(e.value)


def test_human_noise_needs_a_dataset_with_human_labels():
    with pytest.raises(SpecError, match="synthetic has no human labels.*cifar10, cifar100"):
        NoiseSpec.parse("human:worst").check_dataset("synthetic")
    with pytest.raises(SpecError, match="unknown human label set 'worst' for cifar100; valid: noisy"):
        NoiseSpec.parse("human:worst").check_dataset("cifar100")
    with pytest.raises(SpecError, match="asymmetric is defined for cifar10 and cifar100"):
        NoiseSpec.parse("asymmetric:0.2").check_dataset("synthetic")


def test_spec_text_is_canonical():
    assert str(NoiseSpec.parse("symmetric:0.40")) == "symmetric:0.4"
    assert str(NoiseSpec.parse("human:aggre")) == "human:aggre"


@pytest.fixture(scope="module")
def cifar10(real_data):
    from robustbench_ols.data import load_dataset
    return load_dataset("cifar10", real_data, download=False)


@pytest.mark.parametrize("name, rate", [("aggre", 0.0901), ("random1", 0.1723), ("random2", 0.1812),
                                        ("random3", 0.1764), ("worst", 0.4021)])
def test_cifar10n_rates_on_real_files(cifar10, name, rate):
    idx = np.arange(50000)
    r = noisy_labels_for(cifar10, idx, NoiseSpec.parse(f"human:{name}"), seed=0, data_root=os.environ["RBOLS_DATA"])
    assert r.rate == pytest.approx(rate, abs=5e-5)  # the published CIFAR-10N rates
    assert np.allclose(r.T.sum(1), 1)


def test_cifar10n_follows_the_train_subset(cifar10):
    from robustbench_ols.data import class_balanced_subset
    from robustbench_ols.data.noise.human import load_human_labels
    root = os.environ["RBOLS_DATA"]
    idx = class_balanced_subset(cifar10.train_y, 1000, seed=0)
    r = noisy_labels_for(cifar10, idx, NoiseSpec.parse("human:worst"), seed=0, data_root=root)
    assert np.array_equal(r.labels, load_human_labels("cifar10", "worst", root)[idx])


def test_cifar100n_rate_on_real_file(real_data):
    root = real_data
    if not (Path(root) / "cifar-10n" / "CIFAR-100_human.pt").is_file():
        pytest.skip("CIFAR-100N file not found: set RBOLS_DATA (e.g. ../shared/data)")
    from robustbench_ols.data.noise.human import _read, load_human_labels
    noisy100 = load_human_labels("cifar100", "noisy", root)
    clean = np.asarray(_read(Path(root) / "cifar-10n" / "CIFAR-100_human.pt")["clean_label"])
    assert np.mean(noisy100 != clean) == pytest.approx(0.4020, abs=5e-5)


def test_misaligned_human_labels_are_an_error(cifar10):
    from robustbench_ols.common.errors import DataError
    from robustbench_ols.data.noise.human import load_human_labels
    with pytest.raises(DataError, match="does not match the cifar10 training labels"):
        load_human_labels("cifar10", "worst", os.environ["RBOLS_DATA"], clean=cifar10.train_y[::-1].copy())


def test_expected_wrong_rate_matches_the_realised_rate():
    for text in ("symmetric:0.4", "symmetric-all:0.4", "pairflip:0.3", "asymmetric:0.4", "none"):
        spec = NoiseSpec.parse(text)
        realised = noisy(text, seed=5).rate
        assert spec.expected_wrong_rate(K, "cifar10") == pytest.approx(realised, abs=0.01), text
    assert NoiseSpec.parse("symmetric-all:0.4").expected_wrong_rate(10, "cifar10") == pytest.approx(0.36)
    assert NoiseSpec.parse("asymmetric:0.4").expected_wrong_rate(10, "cifar10") == pytest.approx(0.2)
    assert NoiseSpec.parse("human:worst").expected_wrong_rate(10, "cifar10") is None


# ------------------------------------------------------------------ the synthetic twin of human labels

def test_synthetic_twin_draws_each_row_of_its_matrix():
    """Labels drawn from T[clean]: per class, the counts fit the row (chi-square), and the record keeps both Ts."""
    rng = np.random.default_rng(3)
    T = rng.dirichlet(np.ones(4) * 0.7, size=4) * 0.5 + np.eye(4) * 0.5
    clean = np.repeat(np.arange(4), 5000)
    r = make_noisy_labels(clean, 4, "cifar10n-synthetic:worst", seed=0, dataset="cifar10", twin_T=T)
    for c in range(4):
        counts = np.bincount(r.labels[clean == c], minlength=4)
        assert stats.chisquare(counts, T[c] * counts.sum()).pvalue > 1e-4
    s = r.summary()
    assert np.allclose(s["T_drawn_from"], T.round(6)) and np.allclose(s["T"], r.T.round(6))
    assert r.rate == pytest.approx(np.mean(r.labels != clean))
    again = make_noisy_labels(clean, 4, "cifar10n-synthetic:worst", seed=0, dataset="cifar10", twin_T=T)
    other = make_noisy_labels(clean, 4, "cifar10n-synthetic:worst", seed=1, dataset="cifar10", twin_T=T)
    assert np.array_equal(r.labels, again.labels) and not np.array_equal(r.labels, other.labels)


@pytest.mark.parametrize("name", ["worst", "aggre"])
def test_synthetic_twin_on_real_files_has_the_human_labels_rate(cifar10, name):
    """Drawn from the human set's T over all 50,000 images: that T is recorded, and the realised rate is the
    human rate within binomial noise (4 standard errors)."""
    from robustbench_ols.data.noise.human import load_human_labels
    root, idx = os.environ["RBOLS_DATA"], np.arange(50000)
    human = load_human_labels("cifar10", name, root)
    twin = noisy_labels_for(cifar10, idx, NoiseSpec.parse(f"cifar10n-synthetic:{name}"), seed=0, data_root=root)
    assert np.array_equal(twin.T_drawn_from, transition_matrix(cifar10.train_y, human, 10))
    human_rate = float(np.mean(human != cifar10.train_y))
    assert abs(twin.rate - human_rate) < 4 * np.sqrt(human_rate * (1 - human_rate) / 50000)
    assert np.mean(twin.labels != human) > 0.3 * human_rate  # independent draws, not the human labels


@pytest.mark.parametrize("text, dataset, fragment", [
    ("cifar10n-synthetic", "cifar10", "needs a name"),
    ("cifar10n-synthetic:rand9", "cifar10", "unknown human label set 'rand9' for cifar10"),
    ("cifar10n-synthetic:worst", "cifar100", "applies to cifar10, not cifar100"),
    ("cifar100n-synthetic:worst", "cifar100", "unknown human label set 'worst' for cifar100; valid: noisy"),
])
def test_bad_synthetic_twins_are_errors(text, dataset, fragment):
    with pytest.raises(SpecError, match=fragment):
        NoiseSpec.parse(text).check_dataset(dataset)


def test_a_synthetic_twin_that_does_not_exist_exits_2_and_writes_nothing(tmp_path, capsys):
    from robustbench_ols.cli import main
    out = tmp_path / "out"
    assert main(["run", "--dataset", "synthetic", "--noise", "cifar10n-synthetic:worst", "--epochs", "1",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "applies to cifar10, not synthetic" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
