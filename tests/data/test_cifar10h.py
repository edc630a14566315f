"""Tests for CIFAR-10H loading and metrics (robustbench_ols.scoring.cifar10h).

The real file is found through $RBOLS_DATA (CI: ``RBOLS_DATA=../shared/data`` from the repo root);
tests that need it are skipped with a reason when it is not there. Everything else runs on small
arrays and files the tests write themselves; no test touches the network (downloads are faked).
"""
from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_ols.common.errors import DataError
from robustbench_ols.scoring import cifar10h as c10h
from robustbench_ols.scoring.cifar10h import (
    METRIC_KEYS,
    cifar10h_metrics,
    cross_entropy_human_model,
    kl_human_model,
    load_cifar10h,
)

# --------------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def real_root(real_data) -> Path:
    """The real data root (conftest.real_data), with the CIFAR-10H file, or skip."""
    if not (real_data / c10h.FOLDER / c10h.FILENAME).is_file():
        pytest.skip(f"{real_data / c10h.FOLDER / c10h.FILENAME} not found under $RBOLS_DATA")
    return real_data


@pytest.fixture(scope="module")
def test_labels(real_root) -> np.ndarray:
    from robustbench_ols.data import load_dataset
    try:
        return load_dataset("cifar10", real_root, download=False).test_y
    except DataError as e:
        pytest.skip(f"CIFAR-10 not available under $RBOLS_DATA: {e}")


@pytest.fixture(scope="module")
def real_human(real_root, test_labels) -> np.ndarray:
    return load_cifar10h(real_root, test_labels=test_labels, download=False)


def _synthetic_human(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10H-shaped array whose argmax is a known label vector, with many zeros."""
    rng = np.random.default_rng(seed)
    labels = np.arange(c10h.NUM_IMAGES) % 10
    rng.shuffle(labels)
    counts = np.zeros((c10h.NUM_IMAGES, 10))
    counts[np.arange(c10h.NUM_IMAGES), labels] = 40
    extra = rng.integers(0, 10, size=(c10h.NUM_IMAGES, 3))
    np.add.at(counts, (np.arange(c10h.NUM_IMAGES)[:, None], extra), 3)
    return counts / counts.sum(1, keepdims=True), labels


def _write(root: Path, array: np.ndarray) -> Path:
    path = root / c10h.FOLDER / c10h.FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


# --------------------------------------------------------------------------------------------------
# the real file

def test_real_file_loads_and_passes_checks(real_human, test_labels):
    h = real_human
    assert h.shape == (10000, 10) and h.dtype == np.float64
    np.testing.assert_allclose(h.sum(1), 1.0, atol=1e-12)
    assert (h.argmax(1) == test_labels).sum() == 9921  # the README's fact
    assert abs((h == 0).mean() - 0.806) < 0.001


def test_real_file_metrics_of_labels_and_of_humans(real_human, test_labels):
    # A model that outputs the human distribution: KL 0, CE = human entropy, full agreement.
    m = cifar10h_metrics(torch.from_numpy(real_human).float(), test_labels, real_human)
    assert m["c10h_kl_all"] < 1e-6 and m["c10h_kl_correct"] < 1e-6
    assert m["c10h_agree"] == 1.0
    # A one-hot model of the true labels: 99.2% agreement, all correct.
    onehot = np.eye(10)[test_labels]
    m = cifar10h_metrics(onehot, test_labels, real_human)
    assert 0.99 < m["c10h_agree"] < 0.995
    assert m["c10h_kl_correct"] == pytest.approx(m["c10h_kl_all"])


def test_real_file_shuffled_is_rejected(real_human, test_labels, tmp_path):
    perm = np.random.default_rng(0).permutation(10000)
    _write(tmp_path, real_human[perm])
    with pytest.raises(DataError, match="misordered or not CIFAR-10H"):
        load_cifar10h(tmp_path, test_labels=test_labels, download=False, verify=False)
    # and with md5 checking on, the same file is named as corrupt
    with pytest.raises(DataError, match="corrupt CIFAR-10H file .*cifar10h-probs.npy"):
        load_cifar10h(tmp_path, test_labels=test_labels, download=False)


def test_real_file_found_through_env(real_root, monkeypatch):
    monkeypatch.setenv("RBOLS_DATA", str(real_root))
    h = load_cifar10h(download=False)
    assert h.shape == (10000, 10)


# --------------------------------------------------------------------------------------------------
# loading and checks on files the tests write

def test_shuffled_file_rejected(tmp_path):
    human, labels = _synthetic_human()
    _write(tmp_path, human)
    assert load_cifar10h(tmp_path, test_labels=labels, download=False, verify=False).shape == (10000, 10)
    _write(tmp_path, human[np.random.default_rng(1).permutation(10000)])
    with pytest.raises(DataError, match="misordered or not CIFAR-10H") as e:
        load_cifar10h(tmp_path, test_labels=torch.from_numpy(labels), download=False, verify=False)
    assert str(tmp_path) in str(e.value)


def test_wrong_shape_rejected(tmp_path):
    human, _ = _synthetic_human()
    _write(tmp_path, human[:9000])
    with pytest.raises(DataError, match=r"shape \(9000, 10\), expected \(10000, 10\)"):
        load_cifar10h(tmp_path, download=False, verify=False)
    _write(tmp_path, human.T.copy())
    with pytest.raises(DataError, match="shape"):
        load_cifar10h(tmp_path, download=False, verify=False)


def test_rows_not_summing_to_one_rejected(tmp_path):
    human, _ = _synthetic_human()
    counts = human * 50  # vote counts instead of probabilities
    _write(tmp_path, counts)
    with pytest.raises(DataError, match="rows do not sum to 1"):
        load_cifar10h(tmp_path, download=False, verify=False)
    bad = human.copy()
    bad[17] *= 1.001
    _write(tmp_path, bad)
    with pytest.raises(DataError, match="row 17"):
        load_cifar10h(tmp_path, download=False, verify=False)


def test_non_finite_and_negative_rejected(tmp_path):
    human, _ = _synthetic_human()
    bad = human.copy()
    bad[3, 0] = np.nan
    _write(tmp_path, bad)
    with pytest.raises(DataError, match="not finite"):
        load_cifar10h(tmp_path, download=False, verify=False)
    bad = human.copy()
    bad[3, :2] = [-0.5, bad[3, 1] + bad[3, 0] + 0.5]
    _write(tmp_path, bad)
    with pytest.raises(DataError, match="negative"):
        load_cifar10h(tmp_path, download=False, verify=False)


def test_md5_mismatch_names_file(tmp_path):
    human, _ = _synthetic_human()
    path = _write(tmp_path, human)
    with pytest.raises(DataError) as e:
        load_cifar10h(tmp_path, download=False)
    assert str(path) in str(e.value) and c10h.MD5 in str(e.value)


def test_unreadable_file_rejected(tmp_path):
    path = tmp_path / c10h.FOLDER / c10h.FILENAME
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match="unreadable CIFAR-10H file"):
        load_cifar10h(tmp_path, download=False, verify=False)


def test_missing_file_without_download_names_path_and_env(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("download=False must not touch the network")
    monkeypatch.setattr(c10h.urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as e:
        load_cifar10h(tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "cifar-10h" / "cifar10h-probs.npy") in msg
    assert "RBOLS_DATA" in msg and "download was off" in msg


def test_failed_download_names_path_and_cleans_up(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append((url, timeout))
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(c10h.urllib.request, "urlopen", offline)
    root = tmp_path / "fresh"
    with pytest.raises(DataError) as e:
        load_cifar10h(root)
    msg = str(e.value)
    assert str(root / "cifar-10h" / "cifar10h-probs.npy") in msg and "RBOLS_DATA" in msg
    assert "no route to host" in msg
    assert calls == [(c10h.URL, 30)]
    assert not root.exists()  # folders made for the download are removed again


def test_download_with_wrong_content_not_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(c10h.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"junk"))
    with pytest.raises(DataError, match="md5"):
        load_cifar10h(tmp_path)
    assert not (tmp_path / "cifar-10h").exists()


def test_download_saves_file_atomically(real_root, test_labels, tmp_path, monkeypatch):
    data = (real_root / c10h.FOLDER / c10h.FILENAME).read_bytes()
    monkeypatch.setattr(c10h.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(data))
    h = load_cifar10h(tmp_path, test_labels=test_labels)
    assert h.shape == (10000, 10)
    assert sorted(p.name for p in (tmp_path / "cifar-10h").iterdir()) == ["cifar10h-probs.npy"]


# --------------------------------------------------------------------------------------------------
# metrics

def test_kl_hand_computed_with_zeros():
    h = np.array([[0.5, 0.5, 0.0],
                  [1.0, 0.0, 0.0],
                  [0.0, 1.0, 0.0],    # p has a zero where h is zero: contributes nothing
                  [0.5, 0.5, 0.0]])   # p has a zero where h > 0: clamped to eps, finite
    p = np.array([[0.25, 0.5, 0.25],
                  [0.5, 0.25, 0.25],
                  [0.5, 0.5, 0.0],
                  [1.0, 0.0, 0.0]])
    eps = 1e-12
    want = np.array([0.5 * np.log(2), np.log(2), np.log(2),
                     0.5 * np.log(0.5) + 0.5 * (np.log(0.5) - np.log(eps))])
    np.testing.assert_allclose(kl_human_model(h, p, eps=eps), want, rtol=1e-12)
    np.testing.assert_allclose(kl_human_model(h, p, eps=1e-6)[3],
                               0.5 * np.log(0.5) + 0.5 * (np.log(0.5) - np.log(1e-6)), rtol=1e-12)
    want_ce = np.array([-0.5 * np.log(0.25) - 0.5 * np.log(0.5), np.log(2), np.log(2),
                        -0.5 * np.log(eps)])
    np.testing.assert_allclose(cross_entropy_human_model(h, p), want_ce, rtol=1e-12)

    labels = np.array([1, 0, 2, 0])  # argmax p = [1, 0, 0, 0]: rows 0, 1 and 3 correct
    m = cifar10h_metrics(p, labels, h)
    assert set(m) == set(METRIC_KEYS) and all(type(v) is float for v in m.values())
    assert m["c10h_kl_correct"] == pytest.approx(want[[0, 1, 3]].mean(), rel=1e-12)
    assert m["c10h_kl_all"] == pytest.approx(want.mean(), rel=1e-12)
    assert m["c10h_ce"] == pytest.approx(want_ce.mean(), rel=1e-12)
    # human modes: row 0 tied {0, 1} (model 1: agrees), row 1: 0 (agrees), row 2: 1 (model 0: no),
    # row 3 tied {0, 1} (model 0: agrees)
    assert m["c10h_agree"] == pytest.approx(0.75)


def test_model_equal_to_human_scores_kl_zero_and_ce_entropy():
    human, labels = _synthetic_human(3)
    entropy = -(human * np.log(np.where(human > 0, human, 1))).sum(1)
    np.testing.assert_allclose(kl_human_model(human, human), 0.0, atol=1e-12)
    m = cifar10h_metrics(human, labels, human)
    assert abs(m["c10h_kl_correct"]) < 1e-12 and abs(m["c10h_kl_all"]) < 1e-12
    assert m["c10h_ce"] == pytest.approx(entropy.mean(), rel=1e-12)
    assert m["c10h_agree"] == 1.0


def test_torch_inputs_match_numpy():
    rng = np.random.default_rng(0)
    human, labels = _synthetic_human(1)
    logits = rng.normal(size=(10000, 10)) * 3
    probs = torch.softmax(torch.from_numpy(logits), 1)
    a = cifar10h_metrics(probs.float(), torch.from_numpy(labels), torch.from_numpy(human))
    b = cifar10h_metrics(probs.numpy(), labels, human)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-5)
    assert isinstance(kl_human_model(torch.from_numpy(human), probs), np.ndarray)


def test_none_correct_gives_none():
    h = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.9, 0.1], [0.8, 0.2]])
    m = cifar10h_metrics(p, [1, 1], h)
    assert m["c10h_kl_correct"] is None
    assert m["c10h_kl_all"] == pytest.approx(0.5 * (np.log(1 / 0.9) + np.log(1 / 0.2)))


def test_bad_inputs_rejected():
    h = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="softmax"):
        cifar10h_metrics(np.random.default_rng(0).normal(size=(4, 3)), [0, 1, 2, 0], h)
    with pytest.raises(ValueError, match="same shape"):
        kl_human_model(h, np.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="labels"):
        cifar10h_metrics(h, [0, 1], h)
    with pytest.raises(ValueError, match="eps"):
        kl_human_model(h, h, eps=0.0)
