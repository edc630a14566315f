"""A run's final figures (metrics.json): from training's history when it ends (`final_metrics`), or rebuilt by
`repair` from the run's other records when metrics.json is unreadable."""
from __future__ import annotations

import math
from pathlib import Path

from robustbench_ols import store
from robustbench_ols.common.errors import RbolsError, SpecError
from robustbench_ols.store import evals as evals_store


def final_metrics(state, noise_rate: float, num_noisy: int, num_train: int, num_meta: int, num_val: int) -> dict:
    """metrics.json's figures of training: the last and the best epoch of `state["history"]`, the sizes, the time."""
    hist = state["history"]
    last = hist[-1]
    # With a validation split the best epoch is chosen on it (the earliest of equals), never on the
    # test set; without one, the OLS code's reporting: the lowest test error. spec.json says which.
    # With --test-every K only the tested epochs compete (the last one always is).
    best = min((r for r in hist if r["test_err"] is not None),
               key=lambda r: r["val_err"] if num_val else r["test_err"])
    m = {"test_err_last": last["test_err"], "test_err_best": best["test_err"],
         "best_epoch": best["epoch"], "test_loss_last": last["test_loss"],
         "train_err_last": last["train_err"], "train_loss_last": last["train_loss"],
         "noisy_err_last": last["noisy_err"], "noisy_true_acc_last": last["noisy_true_acc"],
         "clean_subset_err_last": last["clean_subset_err"], "noise_rate_realised": noise_rate,
         "num_train": num_train, "num_meta": num_meta, "num_val": num_val,
         "val_err_best": best["val_err"], "num_noisy": num_noisy,
         "epochs": len(hist), "train_seconds": state["train_seconds"]}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}


def repair(run_dir) -> str:
    """Rebuild a finished run's unreadable metrics.json from its other records: the figures of training from
    epochs.csv (their values, written by repr, read back exactly) and noise.json/noise.npz, the scores from
    its first evaluation record (the one written right after training). The unreadable file is set aside.
    Returns what was done."""
    run_dir = Path(run_dir)
    try:
        store.read_metrics(run_dir)
        return f"{run_dir}/metrics.json is readable: nothing to repair"
    except RbolsError:
        pass
    if not store.has(run_dir, "model"):
        raise SpecError(f"{run_dir} has no model.pt: it never finished training, so there are no final figures "
                        "to rebuild; run its `rbols run` command again to resume")
    store.read_spec(run_dir)  # a run directory at all
    history = store.read_epochs(run_dir)
    noise = store.read_noise_summary(run_dir)
    z = store.read_noise_arrays(run_dir)
    held = {k: len(z[k]) if k in z else 0 for k in ("meta_indices", "val_indices")}
    state = {"history": history, "train_seconds": sum((r["seconds"] for r in history), 0.0)}
    metrics = final_metrics(state, noise["noise_rate_realised"], noise["num_noisy"],
                             len(z["train_indices"]) - held["meta_indices"] - held["val_indices"],
                             held["meta_indices"], held["val_indices"])
    first = evals_store.first_eval_record(run_dir)
    if first is None:
        raise SpecError(f"{run_dir} has no evaluation record (evals/*.json) to take the scores from; move the "
                        "directory away and run its spec again")
    path = store.replace_metrics(run_dir, {**metrics, **first["metrics"], "eval_id": first["eval_id"]})
    return (f"{path} rebuilt from epochs.csv ({len(history)} epochs), noise.json and evals/{first['eval_id']}.json; "
            "the unreadable file was set aside")
