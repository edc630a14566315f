"""`rbols eval`: a finished run's model scored again with another setting, without retraining, and the
transfer check added to its record once the run's hard-label surrogate exists (transfer_check.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from robustbench_ols import store
from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import load_dataset
from robustbench_ols.models import precision
from robustbench_ols.models.inference import resolve_device
from robustbench_ols.scoring.evaluation import attack_subset, labelled_test_images, load_human, score_with
from robustbench_ols.scoring.transfer_check import add_transfer, check_transfer_from
from robustbench_ols.spec import EvalSpec, ExecOptions
from robustbench_ols.store.evals import read_eval_record, write_eval_record
from robustbench_ols.train.selection import model_at, selected_epoch


def evaluate_run(run_dir, ev: EvalSpec = EvalSpec(), ex: ExecOptions = ExecOptions(), transfer_from=None) -> dict:
    """Score a finished run's model (the final one, or the epoch `ev.select` chooses) with `ev`, without
    retraining, then add the transfer check where its surrogate (`transfer_from`, else the hard-label run
    beside it) has finished. Returns the record (its add-ons merged in) with `status`: evaluated, already
    evaluated, or already evaluated with the transfer check added. A record is written to
    evals/<eval_id>.json once and never overwritten."""
    run_dir = Path(run_dir)
    if not store.has(run_dir, "model") or not store.has(run_dir, "metrics"):
        raise SpecError(f"{run_dir} is not a finished run (no model.pt and metrics.json); finish it with "
                        "the same `rbols run` command first")
    if transfer_from is not None:
        check_transfer_from(transfer_from, store.read_spec(run_dir), run_dir)  # before anything is computed or written
    status = "already evaluated"
    if read_eval_record(run_dir, ev.eval_id) is None:
        _score(run_dir, ev, ex)
        status = "evaluated"
    before = read_eval_record(run_dir, ev.eval_id).get("transfer")
    addon = add_transfer(run_dir, ev, ex, transfer_from)
    if status == "already evaluated" and addon is not None and before is None:
        status = "already evaluated; transfer check added"
    return {**read_eval_record(run_dir, ev.eval_id), "status": status}


def _score(run_dir: Path, ev: EvalSpec, ex: ExecOptions) -> None:
    spec = store.read_spec(run_dir)
    device = resolve_device(ex.device)
    precision.apply(ex, device, amp=False)  # TF32 and determinism as asked (the record says: store/evals.py)
    data = load_dataset(spec.dataset, ex.data_root, download=ex.download, seed=0)
    attack_subset(data.test_y, ev)
    human = load_human(spec.dataset, ev, ex.data_root, ex.download, data.test_y)
    model = store.load_run_model(run_dir, data.num_classes, device, channels_last=ex.channels_last)
    # the epoch the selection chooses (selection.py); SpecError when its weights were not kept
    model, epoch = model_at(run_dir, ev.select, model, store.read_epochs(run_dir), device, noisy_val=spec.has_noisy_val)
    z = store.read_noise_arrays(run_dir)
    val = None
    if "val_indices" in z and len(z["val_indices"]):
        val = (data.train_x[z["val_indices"]].to(device), torch.as_tensor(z["val_labels"], device=device))
    scores = score_with(model, labelled_test_images(data, device), ev, ex, val=val, human=human)
    scores.metrics.update(selected_epoch(epoch))
    write_eval_record(run_dir, ev, scores, ex.channels_last, device)

