"""Calibration under corruption shift (`--shift corruptions`): the generated corruptions are reproducible, cached
and change the images; a real CIFAR-10 run's record carries per-corruption figures that an independent pass over
the cached images reproduces; and bad settings exit 2 before anything is written."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_ols.cli import main
from robustbench_ols.data.corruptions import CORRUPTIONS, corrupted


def test_every_corruption_is_reproducible_cached_and_changes_the_images(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    built = []
    for name in CORRUPTIONS:
        a = corrupted(images, tmp_path / "a", name, seed=0, on_built=lambda c, s: built.append(c))
        b = corrupted(images, tmp_path / "b", name, seed=0)
        assert a.shape == (5, 3, 32, 32, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b), name  # seeded: impulse noise and glass blur by argument, the rest globally
        assert np.abs(a[4].astype(int) - images).mean() > 1, name  # severity 5 visibly changes every image set
    assert built == list(CORRUPTIONS)
    before = (tmp_path / "a" / "fog.npy").stat().st_mtime_ns
    again = corrupted(images, tmp_path / "a", "fog", seed=0, on_built=lambda c, s: built.append(c))
    assert len(built) == len(CORRUPTIONS) and (tmp_path / "a" / "fog.npy").stat().st_mtime_ns == before
    assert np.array_equal(again, corrupted(images, tmp_path / "b", "fog", seed=0))
    assert not np.array_equal(corrupted(images, tmp_path / "c", "gaussian_noise", seed=1),
                              corrupted(images, tmp_path / "a", "gaussian_noise", seed=0))


@pytest.mark.usefixtures("one_torch_thread")
def test_a_real_run_scored_under_corruptions(tmp_path, real_data):
    root = tmp_path / "root"  # the real CIFAR-10, and a cache of our own
    root.mkdir()
    (root / "cifar-10-batches-bin").symlink_to(Path(real_data) / "cifar-10-batches-bin")
    common = ["--device", "cpu", "--no-progress", "--no-download", "--data-root", str(root), "--no-cifar10h",
              "--attack", "none"]
    out = tmp_path / "out"
    assert main(["run", "--dataset", "cifar10", "--model", "resnet8", "--epochs", "1", "--train-subset", "200",
                 "--out", str(out), *common]) == 0
    (run,) = [d for d in out.iterdir() if (d / "DONE").exists()]
    assert main(["eval", str(run), "--shift", "corruptions", "--corruptions", "fog,impulse_noise",
                 "--severities", "1,5", "--shift-examples", "20", *common]) == 0
    (record,) = [p for p in (run / "evals").glob("*.json") if json.loads(p.read_text())["eval"].get("shift")]
    rec = json.loads(record.read_text())
    assert "NOT the official CIFAR-10-C" in rec["notes"]["shift"] and "imagecorruptions-imaug 1.1.5" in rec["notes"]["shift"]
    with open(record.with_suffix(".corruptions.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["corruption"], r["severity"]) for r in rows] == [("fog", "1"), ("fog", "5"), ("impulse_noise", "1"),
                                                              ("impulse_noise", "5")]
    m = rec["metrics"]
    for key in ("err", "ece", "smece", "nll"):
        assert m[f"corr_{key}"] == pytest.approx(np.mean([float(r[key]) for r in rows]), rel=1e-12)
    # independently: the cached images through the saved model give each row's error
    (cache,) = (root / "corruptions-generated").iterdir()
    about = json.loads((cache / "about.json").read_text())
    from robustbench_ols import store
    from robustbench_ols.data import load_dataset
    data = load_dataset("cifar10", str(root), download=False, seed=0)
    labels = torch.as_tensor(data.test_y[about["test_indices"]])
    assert len(labels) == 20 and set(np.bincount(labels.numpy())) == {2}  # class-balanced
    model = store.load_run_model(run, 10, torch.device("cpu"))
    for r in rows:
        x = torch.from_numpy(np.load(cache / f"{r['corruption']}.npy")[int(r["severity"]) - 1]).permute(0, 3, 1, 2)
        with torch.no_grad():
            err = (model(x.float() / 255).argmax(1) != labels).double().mean().item()
        assert float(r["err"]) == pytest.approx(err, abs=1e-12)
    clean = torch.as_tensor(data.test_x[about["test_indices"]]).float() / 255
    with torch.no_grad():
        assert m["corr_clean_err"] == pytest.approx((model(clean).argmax(1) != labels).double().mean().item())


@pytest.mark.parametrize("extra, fragment", [
    (["--corruptions", "fogg"], "unknown corruption 'fogg'"),
    (["--severities", "0"], "--severities 0: each must be 1, 2, 3, 4 or 5"),
    (["--severities", "6"], "--severities 6"), (["--severities", "2.5"], "--severities 2.5"),
    (["--shift-examples", "5"], "--shift-examples must be at least"),
])
def test_bad_shift_settings_exit_2_and_write_nothing(tmp_path, capsys, extra, fragment):
    out = tmp_path / "out"
    assert main(["run", "--dataset", "synthetic", "--model", "resnet8", "--epochs", "1", "--train-subset", "300",
                 "--device", "cpu", "--no-progress", "--out", str(out), "--shift", "corruptions", *extra]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
