"""The transfer check of a finished run's evaluation (attacks/transfer.py computes it): its hard-label
surrogate found, and the figures written as the record's add-on (store/evals.py).

The surrogate is the same architecture trained with hard labels on the same data, noise and seed: the run
whose spec differs from this one only in its method (`hard` at its defaults), found beside it in the same
results folder (the grid's own hard cell), or named with `--transfer-from RUN_DIR`. A hard-label run is its
own surrogate: its add-on says so and carries no figure (a transfer from itself is the white-box attack).
When the surrogate has not finished yet, the check waits: `rbols matrix` adds it after the grid's cells
(`complete_transfers`), `rbols eval` whenever it is run again with the same setting.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from robustbench_ols import store
from robustbench_ols.attacks.robust import fold_batchnorm
from robustbench_ols.attacks.transfer import Transfer, transfer_check, transferred
from robustbench_ols.audit.regime import REFERENCE
from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import load_dataset
from robustbench_ols.models.inference import resolve_device
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.store.evals import eval_record_path, read_eval_record, read_transfer, write_transfer
from robustbench_ols.store.reading import read_arrays
from robustbench_ols.train.selection import model_at


def surrogate_spec(spec: RunSpec) -> RunSpec:
    """The hard-label run of the same setting (data, noise, seed, schedule, model)."""
    return dataclasses.replace(spec, method=REFERENCE, method_options=())


def check_transfer_from(transfer_from, spec: RunSpec, run_dir=None) -> Path:
    """`--transfer-from RUN_DIR` checked against the run it is for: a finished hard-label run of the same
    architecture and dataset (so of the same test images), not the run itself; SpecError naming the problem
    otherwise."""
    src = Path(transfer_from)
    if not store.is_done(src) or not store.has(src, "model"):
        raise SpecError(f"--transfer-from {src} is not a finished run directory (no DONE and model.pt); give the "
                        "directory of a finished hard-label run of the same model and dataset")
    other = store.read_spec(src)
    if other.run_id == spec.run_id or (run_dir is not None and src.resolve() == Path(run_dir).resolve()):
        raise SpecError(f"--transfer-from {src} is the run itself: a transfer from it is the white-box attack; give "
                        "a hard-label run of the same setting")
    if other.method != REFERENCE:
        raise SpecError(f"--transfer-from {src} is a run of {other.method!r}, not hard labels: the surrogate must be "
                        "trained with hard labels (the check asks whether a naturally trained model's attacks "
                        "transfer)")
    for field, what in (("model", "architecture"), ("dataset", "dataset (and so test set)")):
        if getattr(other, field) != getattr(spec, field):
            raise SpecError(f"--transfer-from {src} is a run of another {what} ({getattr(other, field)}, not "
                            f"{getattr(spec, field)}); the surrogate must share the attacked model's architecture "
                            "and test images")
    return src


def surrogate_of(run_dir: Path, transfer_from=None) -> tuple[Path | None, str]:
    """(the surrogate's run directory or None while it is not finished, how it was chosen: `transfer-from`,
    `self` or `grid`)."""
    spec = store.read_spec(run_dir)
    if transfer_from is not None:
        return check_transfer_from(transfer_from, spec, run_dir), "transfer-from"
    hard = surrogate_spec(spec)
    if hard.run_id == spec.run_id:
        return Path(run_dir), "self"
    sibling = Path(run_dir).parent / hard.run_id
    return (sibling, "grid") if store.is_done(sibling) else (None, "grid")


def add_transfer(run_dir, ev: EvalSpec, ex: ExecOptions = ExecOptions(), transfer_from=None) -> dict | None:
    """The transfer add-on of the run's record of `ev`, computed and written unless it exists; None where the
    check does not apply (no record of `ev`, no attack, checks off) or its surrogate has not finished yet."""
    run_dir = Path(run_dir)
    if not ev.checks or not ev.attack_specs or read_eval_record(run_dir, ev.eval_id) is None:
        return None
    surrogate, how = surrogate_of(run_dir, transfer_from)
    if surrogate is None:
        return None
    done = read_transfer(run_dir, ev.eval_id, surrogate.name)
    if done is not None:
        return done
    device = resolve_device(ex.device)
    about = {"run_id": surrogate.name, "method": store.read_spec(surrogate).method, "chosen_by": how}
    budgets = sorted(transferred(ev.attack_specs), reverse=True)
    if how == "self":
        addon = {"surrogate": about, "metrics": {"transfer_surrogate": "self", "transfer_flagged": False,
                                                 **{Transfer(eps=e).key: None for e in budgets}},
                 "notes": "a hard-label run is its own surrogate: a transfer from it is the white-box attack itself, "
                          "so no figure is recorded"}
        write_transfer(run_dir, ev.eval_id, addon, None, ex.channels_last, device)
        return addon
    figures, details, outcomes = _compute(run_dir, surrogate, ev, ex, device)
    source = "the grid's own hard-label cell" if how == "grid" else "--transfer-from"
    crafted = "; ".join(s.text for specs in transferred(ev.attack_specs).values() for s in specs)
    addon = {"surrogate": about, "metrics": {"transfer_surrogate": surrogate.name, **figures},
             "checks": {"transfer": details},
             "notes": (f"adversarial images crafted on the run {surrogate.name} ({source}) with {crafted}, on the "
                       "same attacked images and seeds, classified by this model (attacks/transfer.py)")}
    write_transfer(run_dir, ev.eval_id, addon, outcomes, ex.channels_last, device)
    return addon


def _compute(run_dir: Path, surrogate: Path, ev: EvalSpec, ex: ExecOptions, device):
    """transfer_check on the images the record's attacks ran on (its robust.npz: their indices, labels, clean
    mistakes and each attack's outcome)."""
    spec = store.read_spec(run_dir)
    arrays = read_arrays(eval_record_path(run_dir, ev.eval_id, "robust.npz"))
    data = load_dataset(spec.dataset, ex.data_root, download=ex.download, seed=0)
    index = torch.as_tensor(arrays["test_index"])
    images = data.test_x[index].to(device)
    labels = torch.as_tensor(arrays["label"], device=device).long()
    white = {s: torch.as_tensor(arrays[s.key[:-len("_err")]]) for s in ev.attack_specs}
    models = []
    for d in (run_dir, surrogate):
        m = store.load_run_model(d, data.num_classes, device, channels_last=ex.channels_last)
        if d == run_dir:  # the scored model: the epoch the setting selects (selection.py)
            m = model_at(run_dir, ev.select, m, store.read_epochs(run_dir), device, noisy_val=spec.has_noisy_val)[0]
        folded = fold_batchnorm(m, channels_last=ex.channels_last)  # the same function, faster (robust.py)
        models.append(folded if folded is not None else m)
    return transfer_check(*models, images, labels, clean_wrong=torch.as_tensor(arrays["clean_wrong"]),
                          white_box=white, seed=ev.attack_seed, batch_size=ev.attack_batch_size,
                          channels_last=ex.channels_last, per_image_starts=ev.attack_starts == "per-image")


def complete_transfers(out, cells, ev: EvalSpec, ex: ExecOptions) -> int:
    """The transfer add-ons of the grid's finished cells whose surrogate has finished too (a cell scored
    before its hard-label cell was done gets its check here). Returns how many were added."""
    added = 0
    for spec in cells:
        run_dir = Path(out) / spec.run_id
        if not store.is_done(run_dir) or read_eval_record(run_dir, ev.eval_id) is None:
            continue
        surrogate, _ = surrogate_of(run_dir)
        if surrogate is None or read_transfer(run_dir, ev.eval_id, surrogate.name) is not None:
            continue
        if add_transfer(run_dir, ev, ex) is not None:
            added += 1
    return added
