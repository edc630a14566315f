"""`rbols score`: a model trained outside the suite, scored like one of its runs.

The checkpoint's weights are loaded into a registered model (a built-in architecture, or a user's through the
`robustbench_ols.models` entry point), then `evaluation.score` runs the same clean pass, attacks, calibration
and CIFAR-10H figures as `rbols eval`, and the record is written the same way (`evals/<eval_id>.json` +
`.reliability.csv`) in `<out>/<score_id>/`, beside `source.json` (the file, its SHA-256, the model and the
dataset). The score_id hashes those three, so the same checkpoint scored again lands in the same folder and a
record, once written, is kept. The model must take images in [0, 1] and normalise them itself, as the suite's
models do.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from robustbench_ols import store
from robustbench_ols.common.errors import SpecError
from robustbench_ols.common.provenance import git_info, now, versions
from robustbench_ols.data import load_dataset
from robustbench_ols.data.files import file_digest
from robustbench_ols.models import create_model
from robustbench_ols.models.inference import resolve_device
from robustbench_ols.scoring.evaluation import attack_subset, labelled_test_images, load_human, score_with
from robustbench_ols.spec import EvalSpec, ExecOptions
from robustbench_ols.store import evals as evals_store


def state_dict_of(obj) -> dict:
    """The weights in a checkpoint: a state dict itself, or one under `state_dict`, `model` or `models`
    (this suite's model.pt: the first model), with DataParallel's `module.` prefix removed."""
    if isinstance(obj, dict) and "models" in obj and isinstance(obj["models"], list) and obj["models"]:
        obj = obj["models"][0]
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise SpecError("the checkpoint holds no state dict (a dict of tensors, alone or under 'state_dict', "
                        "'model' or 'models'); save one with torch.save(model.state_dict(), FILE)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def score_checkpoint(checkpoint, model_name: str, dataset: str, ev: EvalSpec = EvalSpec(),
                     ex: ExecOptions = ExecOptions(), out="results") -> dict:
    """Score the weights in `checkpoint` as the registered model `model_name` on `dataset`'s test set; returns
    the evaluation record (with `status` "evaluated" or "already evaluated") and its `path`."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise SpecError(f"--checkpoint {checkpoint}: no such file")
    device = resolve_device(ex.device)
    data = load_dataset(dataset, ex.data_root, download=ex.download, seed=0)
    attack_subset(data.test_y, ev)  # a bad --attack-examples fails before anything is loaded
    model = create_model(model_name, data.num_classes).to(device)
    try:
        weights = state_dict_of(torch.load(checkpoint, map_location=device, weights_only=True))
    except SpecError as e:
        raise SpecError(f"--checkpoint {checkpoint}: {e}") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a file it cannot read
        raise SpecError(f"--checkpoint {checkpoint} cannot be read by torch.load(weights_only=True) "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); save the weights with "
                        "torch.save(model.state_dict(), FILE)") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise SpecError(f"--checkpoint {checkpoint} does not fit --model {model_name} with {data.num_classes} "
                        f"classes: {str(e).splitlines()[0]} ... (run `rbols models` for the architectures; a "
                        "model of your own is registered through the robustbench_ols.models entry point)") from None
    digest = file_digest(checkpoint, "sha256")
    score_id = hashlib.sha256(json.dumps([digest, model_name, dataset]).encode()).hexdigest()[:12]
    folder = Path(out) / score_id
    done = evals_store.read_eval_record(folder, ev.eval_id) if folder.is_dir() else None
    if done is not None:
        return {**done, "status": "already evaluated", "path": str(evals_store.eval_record_path(folder, ev.eval_id))}
    store.ensure_writable(out)
    human = load_human(dataset, ev, ex.data_root, ex.download, data.test_y)
    if ex.channels_last:
        model = model.to(memory_format=torch.channels_last)
    scores = score_with(model, labelled_test_images(data, device), ev, ex, human=human)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "source.json").exists():
        store.write_json(folder / "source.json", {
            "score_id": score_id, "checkpoint": str(checkpoint.resolve()), "sha256": digest, "model": model_name,
            "dataset": dataset, "num_classes": data.num_classes, "data_source": data.source, "when": now(),
            "git": git_info(), "versions": versions()})
    path = evals_store.write_eval_record(folder, ev, scores, ex.channels_last, device)
    return {**evals_store.read_eval_record(folder, ev.eval_id), "status": "evaluated", "path": str(path)}
