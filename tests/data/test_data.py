"""Tests for the data layer (robustbench_ols.data).

Real CIFAR-10 is found through $RBOLS_DATA (CI: ``RBOLS_DATA=../shared/data`` relative to the repo
root); tests that need it are skipped with a clear reason when it is not there. Everything else runs
on small files the tests write themselves (python layouts, CIFAR-100) or on the synthetic set.
CPU only; the whole file stays well under half a minute on two cores.
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import DataError
from robustbench_ols.data import (
    CIFAR10_CLASSES,
    DATASETS,
    TrainLoader,
    augment_batch,
    class_balanced_subset,
    load_dataset,
)
from robustbench_ols.data.check import describe_root
from robustbench_ols.data.files import ENV_VAR, resolve_data_root

BIN = "cifar-10-batches-bin"
BIN_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
BIN_FILES = BIN_TRAIN + ["test_batch.bin"]


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def cifar10_root(real_data) -> Path:
    """The data root holding the real CIFAR-10 binary layout (conftest.real_data), or skip."""
    return real_data


@pytest.fixture(scope="module")
def cifar10(cifar10_root):
    """The real CIFAR-10, loaded (and md5-checked) once for the module."""
    return load_dataset("cifar10", cifar10_root, download=False)


@pytest.fixture(scope="module")
def cifar10_raw(cifar10_root):
    """The raw binary records read straight from disk (independent of the package's reader):
    dict with uint8 train/test pixel arrays (N, 3072) and int64 labels."""
    def read(fname):
        rec = np.fromfile(cifar10_root / BIN / fname, dtype=np.uint8).reshape(-1, 3073)
        return rec[:, 1:], rec[:, 0].astype(np.int64)
    parts = [read(f) for f in BIN_TRAIN]
    tx, ty = read("test_batch.bin")
    return {"train_x": np.concatenate([p[0] for p in parts]),
            "train_y": np.concatenate([p[1] for p in parts]),
            "test_x": tx, "test_y": ty}


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


# --------------------------------------------------------------------------------------------------
# 1. the real CIFAR-10 binary layout


def test_real_cifar10_binary_layout(cifar10, cifar10_root, cifar10_raw):
    d = cifar10
    assert d.name == "cifar10"
    assert isinstance(d.train_x, torch.Tensor) and isinstance(d.test_x, torch.Tensor)
    assert d.train_x.dtype == torch.uint8 and d.test_x.dtype == torch.uint8
    assert tuple(d.train_x.shape) == (50_000, 3, 32, 32)
    assert tuple(d.test_x.shape) == (10_000, 3, 32, 32)
    for y, n in ((d.train_y, 50_000), (d.test_y, 10_000)):
        assert isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (n,)
        assert y.min() == 0 and y.max() == 9
    assert np.array_equal(np.bincount(d.train_y, minlength=10), np.full(10, 5_000))
    assert np.array_equal(np.bincount(d.test_y, minlength=10), np.full(10, 1_000))

    assert isinstance(d.classes, tuple) and d.num_classes == 10
    assert d.classes[0] == "airplane"
    meta = (cifar10_root / BIN / "batches.meta.txt").read_text().split()
    assert d.classes == tuple(meta) == CIFAR10_CLASSES
    assert "binary" in d.source and str(cifar10_root / BIN) in d.source
    assert d.fine_to_coarse is None

    # Pixel order: R, G, B planes, row-major 32x32, records in file order.
    assert np.array_equal(d.train_x.reshape(50_000, -1).numpy(), cifar10_raw["train_x"])
    assert np.array_equal(d.test_x.reshape(10_000, -1).numpy(), cifar10_raw["test_x"])
    assert np.array_equal(d.train_y, cifar10_raw["train_y"])
    assert np.array_equal(d.test_y, cifar10_raw["test_y"])
    rec0 = np.fromfile(cifar10_root / BIN / "data_batch_1.bin", dtype=np.uint8, count=3073)
    assert d.train_y[0] == rec0[0]
    assert np.array_equal(d.train_x[0, 1].numpy(), rec0[1 + 1024:1 + 2048].reshape(32, 32))


# --------------------------------------------------------------------------------------------------
# 2. python layout == binary layout; python-layout md5 check


def test_python_layout_matches_binary(tmp_path, cifar10, cifar10_raw):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    raw = cifar10_raw
    for i in range(5):
        sl = slice(i * 10_000, (i + 1) * 10_000)
        _dump({"data": raw["train_x"][sl], "labels": raw["train_y"][sl].tolist(),
               "batch_label": f"training batch {i + 1} of 5"}, folder / f"data_batch_{i + 1}")
    _dump({"data": raw["test_x"], "labels": raw["test_y"].tolist(),
           "batch_label": "testing batch 1 of 1"}, folder / "test_batch")
    _dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10_000, "num_vis": 3072},
          folder / "batches.meta")

    py = load_dataset("cifar10", tmp_path, download=False, verify=False)
    assert "python" in py.source and str(folder) in py.source
    assert py.train_x.dtype == torch.uint8 and tuple(py.train_x.shape) == (50_000, 3, 32, 32)
    assert py.train_y.dtype == np.int64 and py.test_y.dtype == np.int64
    assert torch.equal(py.train_x, cifar10.train_x)
    assert torch.equal(py.test_x, cifar10.test_x)
    assert np.array_equal(py.train_y, cifar10.train_y)
    assert np.array_equal(py.test_y, cifar10.test_y)
    assert py.classes == cifar10.classes

    # Our pickles are not the official files: their md5 differs, and verify says which file.
    with pytest.raises(DataError) as ei:
        load_dataset("cifar10", tmp_path, download=False, verify=True)
    msg = str(ei.value)
    assert str(folder / "data_batch_1") in msg
    assert "corrupt" in msg and "c99cafc152244af753f735de768cd75f" in msg


# --------------------------------------------------------------------------------------------------
# 3. a corrupt binary file is reported by name


def test_corrupt_binary_file_named(tmp_path, cifar10_root):
    src, dst = cifar10_root / BIN, tmp_path / BIN
    dst.mkdir()
    for f in BIN_FILES + ["batches.meta.txt"]:
        if f != "data_batch_3.bin":
            (dst / f).symlink_to(src / f)
    shutil.copyfile(src / "data_batch_3.bin", dst / "data_batch_3.bin")
    with open(dst / "data_batch_3.bin", "r+b") as fh:
        fh.seek(12_345)
        b = fh.read(1)
        fh.seek(12_345)
        fh.write(bytes([b[0] ^ 0xFF]))

    with pytest.raises(DataError) as ei:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(ei.value)
    assert "data_batch_3.bin" in msg and "corrupt" in msg
    assert "942cd6a4bcdd0dd3c604fbe906cb4421" in msg  # the expected md5
    for other in ("data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"):
        assert other not in msg

    with pytest.raises(DataError) as ei2:
        list(describe_root(tmp_path))
    assert "data_batch_3.bin" in str(ei2.value) and "corrupt" in str(ei2.value)
    assert str(ei2.value) == msg


# --------------------------------------------------------------------------------------------------
# 4. missing data, unknown names, root resolution


def test_missing_cifar10_offline(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as ei:
        load_dataset("cifar10", empty, download=False)
    msg = str(ei.value)
    assert str(empty) in msg
    assert "cifar-10-batches-py" in msg and "cifar-10-batches-bin" in msg
    assert ENV_VAR in msg and "RBOLS_DATA" in msg
    assert "cifar-100-python" not in msg


def test_missing_cifar100_offline(tmp_path):
    with pytest.raises(DataError) as ei:
        load_dataset("cifar100", tmp_path, download=False)
    msg = str(ei.value)
    assert str(tmp_path) in msg and "cifar-100-python" in msg and "RBOLS_DATA" in msg
    assert "cifar-10-batches-bin" not in msg


def test_incomplete_layout_counts_as_missing(tmp_path, cifar10_root):
    # Five of the six binary files: not a complete layout, so "not found", not a crash.
    (tmp_path / BIN).mkdir()
    for f in BIN_TRAIN:
        (tmp_path / BIN / f).symlink_to(cifar10_root / BIN / f)
    with pytest.raises(DataError, match="not found"):
        load_dataset("cifar10", tmp_path, download=False)


def test_unknown_dataset_lists_valid_ones(tmp_path):
    with pytest.raises(DataError) as ei:
        load_dataset("imagenet", tmp_path, download=False)
    msg = str(ei.value)
    assert "imagenet" in msg
    assert set(DATASETS) == {"cifar10", "cifar100", "synthetic"}
    for name in DATASETS:
        assert name in msg


def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv(ENV_VAR, str(env))
    assert resolve_data_root(explicit) == explicit
    assert resolve_data_root(str(explicit)) == explicit
    assert resolve_data_root() == env
    assert resolve_data_root(None) == env
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "robustbench_ols"
    # load_dataset searches the $RBOLS_DATA root when no root is given
    monkeypatch.setenv(ENV_VAR, str(env))
    with pytest.raises(DataError) as ei:
        load_dataset("cifar10", download=False)
    assert str(env) in str(ei.value)


# --------------------------------------------------------------------------------------------------
# 5. CIFAR-100 python layout (small files written here)


def test_cifar100_python_layout(tmp_path):
    rng = np.random.default_rng(123)
    fine_to_coarse = np.repeat(np.arange(20), 5)[rng.permutation(100)]  # scrambled, 5 per superclass
    assert not np.array_equal(fine_to_coarse, np.repeat(np.arange(20), 5))
    assert np.array_equal(np.bincount(fine_to_coarse), np.full(20, 5))

    train_fine = rng.permutation(np.tile(np.arange(100), 2))  # every fine class present in train
    test_fine = rng.integers(0, 100, 100)
    train_data = rng.integers(0, 256, (200, 3072), dtype=np.uint8)
    test_data = rng.integers(0, 256, (100, 3072), dtype=np.uint8)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for fname, data, fine in (("train", train_data, train_fine), ("test", test_data, test_fine)):
        _dump({"filenames": [f"{i}.png" for i in range(len(fine))], "batch_label": fname,
               "fine_labels": fine.tolist(), "coarse_labels": fine_to_coarse[fine].tolist(),
               "data": data}, folder / fname)
    fine_names = [f"fine{k:02d}" for k in range(100)]
    _dump({"fine_label_names": fine_names, "coarse_label_names": [f"c{k}" for k in range(20)]},
          folder / "meta")

    d = load_dataset("cifar100", tmp_path, download=False, verify=False)
    assert d.name == "cifar100" and d.num_classes == 100 and d.classes == tuple(fine_names)
    assert d.train_x.dtype == torch.uint8 and tuple(d.train_x.shape) == (200, 3, 32, 32)
    assert tuple(d.test_x.shape) == (100, 3, 32, 32)
    assert np.array_equal(d.train_x.reshape(200, -1).numpy(), train_data)
    assert np.array_equal(d.test_x.reshape(100, -1).numpy(), test_data)
    assert d.train_y.dtype == np.int64 and d.test_y.dtype == np.int64
    assert np.array_equal(d.train_y, train_fine) and np.array_equal(d.test_y, test_fine)
    assert d.fine_to_coarse is not None
    assert np.array_equal(d.fine_to_coarse, fine_to_coarse)
    assert "python" in d.source and str(folder) in d.source

    with pytest.raises(DataError) as ei:
        load_dataset("cifar100", tmp_path, download=False, verify=True)
    assert str(folder / "train") in str(ei.value) and "corrupt" in str(ei.value)


# --------------------------------------------------------------------------------------------------
# 6. synthetic


def test_synthetic_deterministic_and_labelled_as_test_data():
    a = load_dataset("synthetic", seed=0)
    b = load_dataset("synthetic", seed=0)
    c = load_dataset("synthetic", seed=1)
    assert a.name == "synthetic"
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape[1:] == (3, 32, 32)
    assert a.test_x.dtype == torch.uint8 and a.test_x.shape[1:] == (3, 32, 32)
    assert a.train_y.dtype == np.int64
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert np.array_equal(a.train_y, b.train_y) and np.array_equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert not np.array_equal(a.train_y, c.train_y)
    assert "tests only" in a.source and "synthetic" in a.source
    k = a.num_classes
    for y in (a.train_y, a.test_y):
        counts = np.bincount(y, minlength=k)
        assert len(counts) == k and counts.min() == counts.max() == len(y) // k
    # not a constant image: pixels actually vary
    assert a.train_x.float().std() > 10


# --------------------------------------------------------------------------------------------------
# 7. class_balanced_subset


def test_class_balanced_subset():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), [80, 90, 100, 110, 120, 60, 70, 95, 105, 170]))
    for n in (10, 137, 500, 555):
        idx = class_balanced_subset(labels, n, seed=3)
        assert idx.shape == (n,)
        assert np.all(np.diff(idx) > 0)  # sorted and unique
        assert idx.min() >= 0 and idx.max() < len(labels)
        counts = np.bincount(labels[idx], minlength=10)
        assert counts.sum() == n
        assert counts.max() - counts.min() <= 1
        assert np.array_equal(idx, class_balanced_subset(labels, n, seed=3))
        assert not np.array_equal(idx, class_balanced_subset(labels, n, seed=4))
    # the remainder goes to different classes for different seeds
    rem = {tuple(np.bincount(labels[class_balanced_subset(labels, 137, seed=s)], minlength=10))
           for s in range(5)}
    assert len(rem) > 1

    with pytest.raises(DataError):
        class_balanced_subset(labels, len(labels) + 1, seed=0)
    with pytest.raises(DataError):
        class_balanced_subset(labels, 9, seed=0)
    with pytest.raises(DataError):  # class 5 has only 60 images
        class_balanced_subset(labels, 650, seed=0)
    # n == the whole set is allowed when it is balanced enough; here it is not (classes differ)
    with pytest.raises(DataError):
        class_balanced_subset(labels, len(labels), seed=0)
    full = np.repeat(np.arange(10), 7)
    assert np.array_equal(class_balanced_subset(full, 70, seed=0), np.arange(70))


# --------------------------------------------------------------------------------------------------
# 8. augmentation and the training loader


def test_augment_batch_keeps_shape_and_dtype():
    x = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    out2 = augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, out2)
    # pad 0 leaves only the flip
    g = torch.Generator().manual_seed(1)
    out0 = augment_batch(x, g, pad=0)
    for i in range(len(x)):
        assert torch.equal(out0[i], x[i]) or torch.equal(out0[i], x[i].flip(-1))


def test_the_batches_are_the_cpu_generators_whatever_the_device():
    """Issue 27: an epoch's permutation and crop/flip draws come from a CPU generator seeded (seed, epoch), in the
    order it makes them (the permutation, then each batch's dy, dx, flip), and are copied to the images' device;
    so the batch order of a run is the order that generator gives, on any device."""
    x = torch.randint(0, 256, (203, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(203) % 10
    loader = TrainLoader(x, y, 64, seed=3)
    for epoch in (0, 5):
        g = torch.Generator().manual_seed(3 * 1_000_003 + epoch)
        perm = torch.randperm(203, generator=g)
        batches = list(loader.epoch(epoch))
        assert [len(b.index) for b in batches] == [64, 64, 64, 11]
        assert torch.equal(torch.cat([b.index for b in batches]), perm)
        for b, batch in enumerate(batches):  # the crops and flips of the same generator, continued
            assert torch.equal(batch.x, augment_batch(x[perm[b * 64:(b + 1) * 64]], g).float() / 255)
        drawn, offsets = loader.draws(epoch)
        assert drawn.device.type == "cpu" and all(t.device.type == "cpu" for o in offsets for t in o)


def _small_set(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels


def test_train_loader_epoch_covers_indices_and_drops_singleton():
    n, bs = 101, 10  # n % bs == 1: the last batch of one image is dropped
    images, labels = _small_set(n)
    loader = TrainLoader(images, labels, bs, seed=5)
    assert len(loader) == 10
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader)
    seen = []
    for b in batches:
        assert b.x.dtype == torch.float32 and tuple(b.x.shape) == (bs, 3, 32, 32)
        assert b.x.min() >= 0 and b.x.max() <= 1
        assert torch.equal(b.y, labels[b.index])
        seen.append(b.index)
    seen = torch.cat(seen)
    counts = torch.bincount(seen, minlength=n)
    assert (counts == 1).sum() == n - 1 and (counts == 0).sum() == 1

    # a remainder > 1 is kept as a smaller last batch
    loader2 = TrainLoader(*_small_set(25), 10, seed=5)
    sizes = [len(b.index) for b in loader2.epoch(0)]
    assert sizes == [10, 10, 5]


def test_train_loader_seeded_by_seed_and_epoch():
    images, labels = _small_set(64)
    a = list(TrainLoader(images, labels, 16, seed=2).epoch(3))
    b = list(TrainLoader(images, labels, 16, seed=2).epoch(3))
    c = list(TrainLoader(images, labels, 16, seed=2).epoch(4))
    d = list(TrainLoader(images, labels, 16, seed=3).epoch(3))
    for x, y in zip(a, b):
        assert torch.equal(x.index, y.index) and torch.equal(x.x, y.x) and torch.equal(x.y, y.y)
    assert not all(torch.equal(x.index, y.index) for x, y in zip(a, c))
    assert not all(torch.equal(x.x, y.x) for x, y in zip(a, c))
    assert not all(torch.equal(x.index, y.index) for x, y in zip(a, d))


def test_train_loader_without_augmentation_is_plain_scaling():
    images, labels = _small_set(40)
    loader = TrainLoader(images, labels, 8, seed=0, augment=False)
    for b in loader.epoch(0):
        assert torch.equal(b.x, images[b.index].float() / 255)
        assert torch.equal(b.y, labels[b.index])


def test_train_loader_channels_last():
    images, labels = _small_set(16)
    b = next(iter(TrainLoader(images, labels, 8, seed=0, channels_last=True).epoch(0)))
    assert b.x.is_contiguous(memory_format=torch.channels_last)
    assert tuple(b.x.shape) == (8, 3, 32, 32)


def _recover_crop(orig: torch.Tensor, aug: torch.Tensor, pad: int = 4):
    """All (dy, dx, flipped) such that `aug` is the window at (dy, dx) of `orig` zero-padded by
    `pad` (flipped horizontally if `flipped`). Brute force over every offset."""
    xp = F.pad(orig, (pad, pad, pad, pad))
    h, w = orig.shape[1:]
    wins = xp.unfold(1, h, 1).unfold(2, w, 1)  # (C, 2p+1, 2p+1, H, W)
    wins = wins.permute(1, 2, 0, 3, 4).contiguous()  # (2p+1, 2p+1, C, H, W)
    found = []
    for flipped, cand in ((False, wins), (True, wins.flip(-1))):
        ok = (cand == aug).reshape(*cand.shape[:2], -1).all(-1)
        for dy, dx in ok.nonzero().tolist():
            found.append((dy, dx, flipped))
    return found


def test_augment_is_crop_and_flip_on_real_images(cifar10):
    x = cifar10.train_x[:512]
    g = torch.Generator().manual_seed(11)
    out = augment_batch(x, g)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    draws = []
    for i in range(len(x)):
        found = _recover_crop(x[i], out[i])
        assert found, f"augmented image {i} is no crop/flip window of its padded original"
        draws.append(found[0])
    flips = [f for _, _, f in draws]
    offsets = {(dy, dx) for dy, dx, _ in draws}
    assert any(flips) and not all(flips)
    assert 0.35 < np.mean(flips) < 0.65
    assert len(offsets) > 20
    assert {dy for dy, _ in offsets} == set(range(9)) and {dx for _, dx in offsets} == set(range(9))


def test_loader_batches_are_crops_of_real_images(cifar10):
    images, labels = cifar10.train_x[:200], torch.from_numpy(cifar10.train_y[:200])
    batch = next(iter(TrainLoader(images, labels, 64, seed=0).epoch(0)))
    assert tuple(batch.x.shape) == (64, 3, 32, 32)
    as_u8 = batch.x.mul(255).round().to(torch.uint8)
    assert torch.equal(as_u8.float() / 255, batch.x)
    for j, i in enumerate(batch.index.tolist()):
        assert _recover_crop(images[i], as_u8[j]), f"batch image {j} (index {i}) is no crop/flip"
    assert torch.equal(batch.y, labels[batch.index])


def test_subset_of_an_unbalanced_label_set_works_for_every_seed():
    labels = np.array([0] * 5 + [1] * 10)  # class 0 cannot take the remainder image
    for seed in range(10):
        idx = class_balanced_subset(labels, 11, seed=seed)
        assert np.bincount(labels[idx]).tolist() == [5, 6]


def test_truncated_file_without_md5_check_is_a_data_error(tmp_path, cifar10_root):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for f in (cifar10_root / "cifar-10-batches-bin").iterdir():
        if f.name == "data_batch_2.bin":
            (d / f.name).write_bytes(f.read_bytes()[:1000])
        else:
            (d / f.name).symlink_to(f)
    with pytest.raises(DataError, match="unreadable data in .*cifar-10-batches-bin"):
        load_dataset("cifar10", tmp_path, download=False, verify=False)


def test_cifar100_with_a_class_missing_from_train_is_a_data_error(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    imgs = np.zeros((10, 3072), np.uint8)
    _dump({"data": imgs, "fine_labels": [0] * 10, "coarse_labels": [0] * 10}, d / "train")
    _dump({"data": imgs, "fine_labels": [1] * 10, "coarse_labels": [0] * 10}, d / "test")
    _dump({"fine_label_names": [f"c{i}" for i in range(100)]}, d / "meta")
    with pytest.raises(DataError, match="never occur in train"):
        load_dataset("cifar100", tmp_path, download=False, verify=False)
