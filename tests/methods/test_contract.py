"""Every registered method (and a stateful test plugin) meets the same contract: two tiny epochs on
the synthetic set with a finite loss, its state round-trips through state_dict, and a run resumed from
the epoch-1 checkpoint equals an uninterrupted one."""
import csv
import json
import re
from pathlib import Path

import pytest
import torch

from robustbench_ols import store
from robustbench_ols.methods import build_method, list_methods
from robustbench_ols.scoring.evaluation import EvalSpec
from robustbench_ols.spec import ExecOptions, RunSpec
from robustbench_ols.train.run import execute

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=())  # scoring is tested elsewhere
# Sized for the tiny test set; everything else is the method's default.
SMALL = {"mwnet": (("meta", 50),)}
EXTRA = [("ols", (("period", 3), ("init", "zeros"))), ("ls", (("gamma", 0.9),))]
# Written out, not read from the registry: a new built-in must be added here (and to docs/methods.md's table).
BUILTINS = ["hard", "ls", "ols", "ols-single", "sce", "bootsoft", "boothard", "disturblabel", "gce", "coteaching",
            "pencil", "arazo", "mwnet", "gls", "elr"]
CASES = [(m, SMALL.get(m, ())) for m in BUILTINS] + EXTRA + [("tests.contract_plugin:EMASmoothing", ()),
                                                            ("examples.prior_smoothing:PriorSmoothing", ())]
IDS = [m if not o else f"{m}-{'-'.join(f'{k}{v}' for k, v in o)}" for m, o in CASES]


def spec(method, options):
    return RunSpec(dataset="synthetic", model="resnet8", method=method, method_options=options,
                   noise="symmetric:0.4", epochs=2, batch_size=64, train_subset=320)


def rows(d):
    with open(d / "epochs.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("method, options", CASES, ids=IDS)
def test_method_contract(method, options, tmp_path, monkeypatch):
    s = spec(method, options)
    full = execute(s, EX, tmp_path / "a", EV)
    r = rows(full.run_dir)
    assert len(r) == 2 and all(torch.isfinite(torch.tensor(float(x["train_loss"]))) for x in r)
    final = torch.load(full.run_dir / "model.pt", weights_only=False)
    record = json.loads((full.run_dir / "spec.json").read_text())
    assert len(final["models"]) == record["method"]["num_models"]

    # The state round-trips: a fresh instance loaded with it gives the same state back.
    m, _ = build_method(method, dict(options))
    from robustbench_ols.methods import FitInfo
    n = full.metrics["num_train"]
    m.setup(FitInfo(10, n, torch.zeros(n, dtype=torch.long), 2, -(-n // 64), torch.device("cpu"),
                    "synthetic", 0, train_images=torch.zeros(n, 3, 32, 32, dtype=torch.uint8),
                    noise_rate=0.4, lr_at=s.lr_at,
                    meta_images=torch.zeros(50, 3, 32, 32, dtype=torch.uint8) if m.clean_meta_size() else None,
                    meta_labels=torch.arange(50) % 10 if m.clean_meta_size() else None))
    m.load_state_dict(final["method"])
    assert same(m.state_dict(), final["method"])

    # Interrupted after the epoch-1 checkpoint, then resumed: equal to the uninterrupted run.
    real = store.save_checkpoint

    def stop_after_first(run_dir, models, optimizer, method_, state):
        real(run_dir, models, optimizer, method_, state)
        raise KeyboardInterrupt
    monkeypatch.setattr(store, "save_checkpoint", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        execute(s, EX, tmp_path / "b", EV)
    monkeypatch.setattr(store, "save_checkpoint", real)
    resumed = execute(s, EX, tmp_path / "b", EV)
    assert rows(resumed.run_dir) == r
    sessions = json.loads((resumed.run_dir / "executions.json").read_text())
    assert [e["first_epoch"] for e in sessions] == [1, 2]  # the second session started at epoch 2
    again = torch.load(resumed.run_dir / "model.pt", weights_only=False)
    assert same(again["models"], final["models"]) and same(again["method"], final["method"])


def test_every_builtin_is_covered_and_documented():
    """Every registered method has a contract case above and a row in the Methods table (docs/methods.md)."""
    page = (Path(__file__).resolve().parents[2] / "docs/methods.md").read_text()
    table = next(p for p in page.split("# Methods\n", 1)[1].split("\n\n") if p.startswith("| method |"))
    documented = {name for row in table.splitlines()[2:] for name in re.findall(r"`([a-z0-9-]+)`", row.split("|")[1])}
    assert set(list_methods()) - set(BUILTINS) == set(), "a built-in without a contract case"
    assert set(list_methods()) ^ documented == set(), "docs/methods.md's Methods table and the registry differ"
