"""Which epoch's model a figure is of: the field's most argued protocol choice under label noise.

- `last`: the last epoch (the default, and what a practitioner without clean labels deploys);
- `noisy-val`: the epoch with the lowest error on a class-balanced share of the **noisy** training set held
  out before training (`--noisy-val SHARE`; 5% when asked for without a share), as the CIFAR-N reproduction
  does (KlemenVovk/noisy-labels, ReScience C: choosing on the clean test set "overestimates the real-world
  performance"); a run with `--val-split N` and noisy validation labels is chosen the same way;
- `oracle`: the epoch with the lowest test error, which the OLS authors' code reports: optimistic, since the
  test set chooses the model it then scores; labelled "oracle (optimistic)" wherever it appears.

Only epochs with a test pass compete (`--test-every K`: every K-th and the last), the earliest of equals
winning. The test error at the chosen epoch is read from `epochs.csv`; every other score at that epoch
needs its weights, which a run keeps as it trains (`keep_weights`: `model_noisy-val.pt` when it has a
noisy validation split, `model_oracle.pt` always; each one copy of the evaluated model's weights, e.g.
0.3 MB for resnet8, 2.6 MB for resnet56b on CIFAR-100; in the checkpoint with the history while it trains),
and `rbols eval --select` scores them.
"""
from __future__ import annotations

import math
from pathlib import Path

from robustbench_ols.common.errors import SpecError

SELECTIONS = ("last", "noisy-val", "oracle")
LABELS = {"last": "last epoch", "noisy-val": "lowest noisy-validation error",
          "oracle": "lowest test error: oracle (optimistic)"}
# the column of results.collect / epochs.csv a selection is chosen by, and the suffix of its columns
_BY = {"noisy-val": "val_err", "oracle": "test_err"}


def check_selection(text: str) -> str:
    """`--select`'s value, or SpecError naming the valid ones."""
    if text not in SELECTIONS:
        raise SpecError(f"--select {text!r} is not a checkpoint selection; valid: {', '.join(SELECTIONS)} "
                        "(oracle: the best test epoch, optimistic)")
    return text


def suffix(how: str) -> str:
    """`last`, `noisy_val`, `oracle`: how a selection is spelled in column names (`test_err_noisy_val`)."""
    return how.replace("-", "_")


def chosen(history: list[dict], how: str, *, noisy_val: bool) -> dict | None:
    """The epochs.csv row that `how` chooses from `history` (rows with `epoch`, `test_err`, `val_err`), or None
    when it cannot choose (noisy-val without a noisy validation split)."""
    tested = [r for r in history if r.get("test_err") is not None and not _nan(r["test_err"])]
    if how == "last" or not tested:
        return history[-1] if history else None
    if how == "noisy-val" and not noisy_val:
        return None
    return min(tested, key=lambda r: r[_BY[how]])


def selected_figures(history: list[dict], *, noisy_val: bool) -> dict:
    """`test_err_<sel>` and `epoch_<sel>` of each selection but `last` (NaN where it cannot choose), and the
    wrong-label fit there (`noisy_err_<sel>`), for results.collect."""
    out = {}
    for how in SELECTIONS[1:]:
        row = chosen(history, how, noisy_val=noisy_val)
        s = suffix(how)
        out.update({f"test_err_{s}": row["test_err"] if row else math.nan, f"epoch_{s}": row["epoch"] if row else math.nan,
                    f"noisy_err_{s}": row["noisy_err"] if row else math.nan})
    return out


def weights_path(run_dir, how: str) -> Path:
    return Path(run_dir) / f"model_{how}.pt"


def keep_weights(state: dict, model, *, noisy_val: bool) -> None:
    """After an epoch (the last row of `state["history"]`): where it is now the chosen epoch of `noisy-val`
    (with a noisy validation split) or `oracle`, keep a copy of `model`'s weights with the epoch in
    `state["kept"]`. The checkpoint saves that state whole, so the kept weights and the history that chose
    them are written together (a run killed at any point resumes with both of one epoch)."""
    history, kept = state["history"], state.setdefault("kept", {})
    last = history[-1]
    for how in ("noisy-val", "oracle"):
        row = chosen(history, how, noisy_val=noisy_val)
        if row is not None and row["epoch"] == last["epoch"] and last.get("test_err") is not None:
            kept[how] = {"epoch": last["epoch"],
                         "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def write_kept(run_dir, state: dict, save) -> None:
    """`model_<how>.pt` of each selection's kept weights, through `save(path, obj)` (atomic), once training
    is over: from the checkpoint's state, so a run killed before DONE writes the same files again."""
    for how, kept in state.get("kept", {}).items():
        save(weights_path(run_dir, how), kept)


def load_weights(run_dir, how: str, history: list[dict], device, *, noisy_val: bool) -> tuple[dict, int]:
    """(state dict, epoch) of the model at the epoch `how` chooses; SpecError when the run cannot choose it or
    did not keep that epoch's weights (a run trained before they were kept, or whose kept epoch is not the
    one its epochs.csv chooses)."""
    row = chosen(history, how, noisy_val=noisy_val)
    if row is None:
        raise SpecError(f"{run_dir} has no noisy validation split, so --select noisy-val cannot choose an epoch; "
                        "train with --noisy-val [SHARE] (or score it with --select last or oracle)")
    import torch  # here: spec.py reads SELECTIONS, and the command line must not wait for torch
    path = weights_path(run_dir, how)
    kept = torch.load(path, map_location=device, weights_only=True) if path.exists() else None
    if kept is None or kept["epoch"] != row["epoch"]:
        raise SpecError(f"{run_dir} did not keep the weights of epoch {row['epoch']}, which --select {how} chooses "
                        f"({path.name} {'holds epoch ' + str(kept['epoch']) if kept else 'is missing'}: runs trained "
                        "before the suite kept them have only the last epoch's); score it with --select last")
    return kept["state_dict"], row["epoch"]


def model_at(run_dir, how: str, model, history: list[dict], device, *, noisy_val: bool):
    """(the model of the epoch `how` chooses, that epoch): `model` itself and None for `last`, else a copy of
    it with the kept weights of that epoch; SpecError as load_weights."""
    if how == "last":
        return model, None
    import copy
    weights, epoch = load_weights(run_dir, how, history, device, noisy_val=noisy_val)
    chosen_model = copy.deepcopy(model)
    chosen_model.load_state_dict(weights)
    return chosen_model.eval(), epoch


def selected_epoch(epoch) -> dict:
    """The record's `selected_epoch` figure for `model_at`'s epoch (none for the last epoch)."""
    return {} if epoch is None else {"selected_epoch": epoch}


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)
