"""One run, end to end, in a write-once directory `<out>/<run_id>/`.

Files: `spec.json` (spec, execution, versions, git commit), `noise.json` + `noise.npz` (the noisy
labels, is-noisy mask, transition matrix, realised rate, train indices), `epochs.csv` (one row per
epoch), `checkpoint.pt` while unfinished, then `model.pt`, `metrics.json`, `status.json` and last
`DONE` (atomic rename). Everything is validated before anything is written; every file is written to
a temporary name and renamed, so a killed run never leaves a half-written file under a final name.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import TrainLoader, class_balanced_subset, load_dataset, resolve_data_root
from .errors import ContractError, RunFailed, SpecError
from .methods import FitInfo, build_method
from .models import create_model, list_models
from .noise import NoiseSpec, noisy_labels_for
from .spec import ExecOptions, RunSpec
from .evaluation import EvalSpec, attack_subset, load_human, score
from .training import Timer, evaluate, make_optimizer, resolve_device, train_epoch

EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_err", "noisy_err", "noisy_true_acc",
                 "clean_subset_err", "test_loss", "test_err", "val_loss", "val_err", "seconds")
# val_loss and val_err: on the validation split (--val-split), empty when the run has none.
RELIABILITY_COLUMNS = ("lower", "upper", "count", "confidence", "accuracy")  # calibration.ReliabilityTable.rows()


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "done" or "already done"
    metrics: dict


def execute(spec: RunSpec, ex: ExecOptions = ExecOptions(), out="results", ev: EvalSpec = EvalSpec()) -> RunResult:
    """Train (or resume, or skip when DONE) the run `spec` under `out`, then score its final model
    with `ev`. A finished run is never retrained; if it has no record for `ev` yet, one is added."""
    device = resolve_device(ex.device)
    method, _ = build_method(spec.method, spec.options)
    if spec.model not in list_models():
        create_model(spec.model, 1)  # raises the error listing the valid models
    ns = NoiseSpec.parse(spec.noise)
    ns.check_dataset(spec.dataset)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out} is a file; give a directory for the run directories")
    run_dir = out / spec.run_id
    if (run_dir / "DONE").exists():
        return _already_done(run_dir, ev, ex)
    _check_existing(run_dir, spec)
    if (run_dir / "metrics.json").exists():  # killed after the final files, before DONE
        _mark_done(run_dir)
        return _already_done(run_dir, ev, ex, status="done")
    # Everything up to setup() may still reject the input: nothing is written before it.
    # The synthetic set has a fixed data seed: its labels must not change with --seed.
    data = load_dataset(spec.dataset, ex.data_root, download=ex.download, seed=0)
    attack_subset(data.test_y, ev)  # rejects a bad --attack-examples now, not after training
    test_positions = epoch_test_subset(data.test_y, spec.test_subset)
    human = load_human(spec.dataset, ev, ex.data_root, ex.download, data.test_y)
    idx = (class_balanced_subset(data.train_y, spec.train_subset, spec.subset_seed)
           if spec.train_subset else np.arange(len(data.train_y)))
    noisy = noisy_labels_for(data, idx, ns, spec.noise_seed, ex.data_root)
    clean = data.train_y[idx]
    # MW-Net-style methods get a clean, balanced meta set held out of the subset AFTER the noise is
    # drawn, so the images they train on carry exactly the noisy labels every other method sees. The
    # validation split is held out the same way, from what is left.
    train_pos, meta_pos = _hold_out(clean, np.arange(len(clean)), method.clean_meta_size(), spec.subset_seed + 7919,
                                    "the method's clean meta set (its meta= option)")
    train_pos, val_pos = _hold_out(clean, train_pos, spec.val_split, spec.subset_seed + 104729, "--val-split")
    val_labels = (clean if spec.val_labels == "clean" else noisy.labels)[val_pos]
    torch.manual_seed(spec.seed)  # model initialisation
    models = [create_model(spec.model, data.num_classes).to(device) for _ in range(method.num_models)]
    if ex.channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
    labels = torch.as_tensor(noisy.labels[train_pos], device=device)
    train_x = data.train_x[idx[train_pos]].to(device)
    loader = TrainLoader(train_x, labels, spec.batch_size, seed=spec.seed, augment=spec.augment,
                         channels_last=ex.channels_last)
    method.setup(FitInfo(
        data.num_classes, len(train_pos), labels, spec.epochs, len(loader), device, spec.dataset,
        spec.seed, train_images=train_x, channels_last=ex.channels_last, amp=spec.amp,
        noise_rate=ns.expected_wrong_rate(data.num_classes, data.name, data.fine_to_coarse), lr_at=spec.lr_at,
        meta_images=data.train_x[idx[meta_pos]].to(device) if len(meta_pos) else None,
        meta_labels=torch.as_tensor(clean[meta_pos], device=device) if len(meta_pos) else None))
    optimizer = make_optimizer(spec, models)

    _write_record(run_dir, spec, ex, device, data.source, method, noisy, clean, idx, idx[meta_pos],
                  idx[val_pos], val_labels)
    state = {"epoch": -1, "history": [], "train_seconds": 0.0}
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = _load_checkpoint(ckpt, models, optimizer, method, device)
    _log_execution(run_dir, ex, device, state["epoch"] + 1)
    val = ((data.train_x[idx[val_pos]].to(device), torch.as_tensor(val_labels, device=device))
           if len(val_pos) else None)
    test = (data.test_x.to(device), torch.as_tensor(data.test_y, device=device))
    test_pos = torch.as_tensor(test_positions, device=device)
    fit_args = dict(models=models, method=method, optimizer=optimizer, loader=loader, state=state,
                    is_noisy=torch.as_tensor(noisy.is_noisy[train_pos], device=device),
                    clean=torch.as_tensor(clean[train_pos], device=device), test=test, val=val,
                    epoch_test=(test[0][test_pos], test[1][test_pos]) if spec.test_subset else test)
    _fit(spec, ex, run_dir, **fit_args)
    metrics = _final_metrics(state, noisy, len(train_pos), len(meta_pos), len(val_pos))
    scores, rel, notes = score(models[0], test_x=test[0], test_y=test[1], ev=ev, val=val, human=human,
                               eval_batch_size=ex.eval_batch_size, channels_last=ex.channels_last)
    _finish(run_dir, models, method, metrics, ev, scores, rel, notes, ex, device)
    return RunResult(run_dir, "done", {**metrics, **scores, "eval_id": ev.eval_id})


def epoch_test_subset(test_y: np.ndarray, n: int) -> np.ndarray:
    """The fixed test images of the per-epoch test pass: all (n = 0) or n class-balanced ones drawn with
    seed 0, the same for every run, so that curves of different runs are measured on the same images."""
    if not n:
        return np.arange(len(test_y))
    k = len(np.unique(test_y))
    if n > len(test_y) or n % k:
        raise SpecError(f"--test-subset {n} must be a multiple of the number of classes ({k}) and at most the "
                        f"test set size ({len(test_y)}); use 0 for the whole test set")
    return class_balanced_subset(test_y, n, seed=0)


def _already_done(run_dir: Path, ev: EvalSpec, ex: ExecOptions, status: str = "already done") -> RunResult:
    """A finished run: its metrics.json, with the figures of `ev` (evaluated now if missing)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics.get("eval_id") != ev.eval_id:
        metrics = {**without_scores(run_dir, metrics), **evaluate_run(run_dir, ev, ex)["metrics"],
                   "eval_id": ev.eval_id}
    return RunResult(run_dir, status, metrics)


def without_scores(run_dir: Path, metrics: dict) -> dict:
    """`metrics` (a run's metrics.json) without the figures of the setting it was scored with (those
    of its own evals/<eval_id>.json), to be replaced by another setting's."""
    own = Path(run_dir) / "evals" / f"{metrics.get('eval_id')}.json"
    if not own.exists():
        return metrics
    scored = json.loads(own.read_text())["metrics"]
    return {k: v for k, v in metrics.items() if k not in scored}


def _hold_out(clean: np.ndarray, positions: np.ndarray, size: int, seed: int, what: str):
    """(kept, held out): `size` class-balanced positions (by clean label) taken out of `positions`."""
    if size <= 0:
        return positions, positions[:0]
    k = len(np.unique(clean[positions]))
    if not k <= size < len(positions):
        raise SpecError(f"{what} asks for {size} held-out images, but {len(positions)} images of {k} classes "
                        "are left: it needs one image per class and must leave images to train on; "
                        "lower it or raise --train-subset")
    held = positions[class_balanced_subset(clean[positions], size, seed)]  # its own stream, fixed per subset
    return np.setdiff1d(positions, held), held


def _write_record(run_dir, spec, ex, device, source, method, noisy, clean, idx, meta_idx, val_idx,
                  val_labels) -> None:
    """spec.json, noise.npz, noise.json (each written once, whichever is missing; spec.json last)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "noise.npz").exists():
        with open(_tmp(run_dir / "noise.npz"), "wb") as f:  # a file object: numpy adds no suffix
            np.savez_compressed(f, noisy_labels=noisy.labels, clean_labels=clean,
                                is_noisy=noisy.is_noisy, train_indices=idx, T=noisy.T,
                                meta_indices=meta_idx, val_indices=val_idx, val_labels=val_labels)
        os.replace(_tmp(run_dir / "noise.npz"), run_dir / "noise.npz")
    if not (run_dir / "noise.json").exists():
        write_json(run_dir / "noise.json", noisy.summary())
    if not (run_dir / "spec.json").exists():
        write_json(run_dir / "spec.json", _spec_record(spec, ex, device, source, method, len(meta_idx)))
    write_json(run_dir / "status.json", {"status": "running"})


def _log_execution(run_dir: Path, ex, device, first_epoch: int) -> None:
    """executions.json: one entry per session that trained this run (a resume may use another
    device or memory format, which changes float rounding; this says which epochs ran where)."""
    import socket
    import time
    path = run_dir / "executions.json"
    log = json.loads(path.read_text()) if path.exists() else []
    log.append({"first_epoch": first_epoch + 1, "device": str(device), "device_name": device_name(device),
                "channels_last": ex.channels_last, "torch_threads": torch.get_num_threads(),
                "host": socket.gethostname(), "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_info()})
    write_json(path, log)


def _fit(spec, ex, run_dir, *, models, method, optimizer, loader, state, is_noisy, clean, test, val, epoch_test):
    bar = _progress_bar(spec, len(loader), state, ex.progress, ex.progress_position)
    try:
        _fit_epochs(spec, ex, run_dir, models, method, optimizer, loader, state, is_noisy, clean, test, val,
                    epoch_test, bar)
    except ContractError as e:
        write_json(run_dir / "status.json", {"status": "failed", "epoch": state["epoch"] + 2, "reason": str(e)})
        raise
    finally:
        if bar is not None:
            bar.close()


def _fit_epochs(spec, ex, run_dir, models, method, optimizer, loader, state, is_noisy, clean, test, val,
                epoch_test, bar):
    for epoch in range(state["epoch"] + 1, spec.epochs):
        timer = Timer()
        lr = spec.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        row = {"epoch": epoch + 1, "lr": lr}
        row.update(train_epoch(models, method, optimizer, loader, epoch, is_noisy=is_noisy,
                               clean=clean, amp=spec.amp, progress=bar))
        row["test_loss"] = row["test_err"] = row["val_loss"] = row["val_err"] = None
        if spec.tests_at(epoch):  # the last epoch on the whole test set, the others on epoch_test
            row.update(evaluate(models[0], *(test if epoch + 1 == spec.epochs else epoch_test),
                                batch_size=ex.eval_batch_size, channels_last=ex.channels_last, amp=spec.amp))
            if val is not None:
                v = evaluate(models[0], *val, batch_size=ex.eval_batch_size, channels_last=ex.channels_last,
                             amp=spec.amp)
                row.update(val_loss=v["test_loss"], val_err=v["test_err"])
        # The training loss is computed before each step; a last step that breaks the weights
        # only shows in the test loss. Either one non-finite: the epoch is not kept.
        bad = [k for k in ("train_loss", "test_loss") if row[k] is not None and not math.isfinite(row[k])]
        if bad:
            reason = f"non-finite {' and '.join(bad)} in epoch {epoch + 1}"
            write_json(run_dir / "status.json", {"status": "failed", "epoch": epoch + 1, "reason": reason})
            raise RunFailed(f"run {run_dir} failed: {reason}; the checkpoint of the last good epoch "
                            "is kept. Lower --lr or check the method's options.")
        row["seconds"] = timer.seconds()
        state["history"].append(row)
        state["epoch"] = epoch
        state["train_seconds"] += row["seconds"]
        _save_checkpoint(run_dir / "checkpoint.pt", models, optimizer, method, state)
        write_epochs_csv(run_dir / "epochs.csv", state["history"])
        if bar is not None and row["test_err"] is not None:
            bar.set_description(f"epoch {epoch + 1}/{spec.epochs} test_err {row['test_err']:.4f}")


def _progress_bar(spec, steps_per_epoch, state, enabled, position=None):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    done = (state["epoch"] + 1) * steps_per_epoch
    return tqdm(total=spec.epochs * steps_per_epoch, initial=done, unit="step", dynamic_ncols=True,
                desc=f"{spec.method} {spec.noise} seed {spec.seed}", position=position,
                leave=position is None)  # a worker's line is reused by its next cell


def _final_metrics(state, noisy, num_train: int, num_meta: int, num_val: int) -> dict:
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
         "clean_subset_err_last": last["clean_subset_err"], "noise_rate_realised": noisy.rate,
         "num_train": num_train, "num_meta": num_meta, "num_val": num_val,
         "val_err_best": best["val_err"], "num_noisy": int(noisy.is_noisy.sum()),
         "epochs": len(hist), "train_seconds": state["train_seconds"]}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}


def _finish(run_dir: Path, models, method, metrics: dict, ev, scores, rel, notes, ex, device) -> None:
    """Final weights, the evaluation record, reliability.csv, then metrics.json (its presence means
    the run is over), then DONE."""
    final = {"models": [m.state_dict() for m in models], "method": method.state_dict()}
    torch.save(final, _tmp(run_dir / "model.pt"))
    os.replace(_tmp(run_dir / "model.pt"), run_dir / "model.pt")
    write_eval_record(run_dir, ev, scores, rel, notes, ex, device)
    write_csv(run_dir / "reliability.csv", RELIABILITY_COLUMNS, rel)
    write_json(run_dir / "metrics.json", {**metrics, **scores, "eval_id": ev.eval_id})
    _mark_done(run_dir)


def write_eval_record(run_dir: Path, ev: EvalSpec, scores: dict, rel: list, notes: dict, ex, device) -> Path:
    """evals/<eval_id>.json (+ .reliability.csv): the figures of one evaluation setting, with how
    and where they were computed."""
    import time
    folder = run_dir / "evals"
    folder.mkdir(exist_ok=True)
    write_csv(folder / f"{ev.eval_id}.reliability.csv", RELIABILITY_COLUMNS, rel)
    path = folder / f"{ev.eval_id}.json"
    write_json(path, {"eval_id": ev.eval_id, "run_id": run_dir.name, "eval": ev.to_dict(), "metrics": scores,
                      "notes": notes, "device": str(device), "device_name": device_name(device),
                      "channels_last": ex.channels_last, "torch_threads": torch.get_num_threads(),
                      "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "git": git_info(), "versions": {"robustbench_ols": __version__, "torch": torch.__version__}})
    return path


def evaluate_run(run_dir, ev: EvalSpec = EvalSpec(), ex: ExecOptions = ExecOptions()) -> dict:
    """Score a finished run's final model with `ev`, without retraining. Returns its record; the
    record is written to evals/<eval_id>.json unless one exists already (then it is returned as is:
    a record is never overwritten)."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.pt").exists() or not (run_dir / "metrics.json").exists():
        raise SpecError(f"{run_dir} is not a finished run (no model.pt and metrics.json); finish it with "
                        "the same `rbols run` command first")
    path = run_dir / "evals" / f"{ev.eval_id}.json"
    if path.exists():
        return {**json.loads(path.read_text()), "status": "already evaluated"}
    try:
        spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text())["spec"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SpecError(f"{run_dir}/spec.json is missing or unreadable ({e}); is this a run directory?") from None
    device = resolve_device(ex.device)
    data = load_dataset(spec.dataset, ex.data_root, download=ex.download, seed=0)
    attack_subset(data.test_y, ev)
    human = load_human(spec.dataset, ev, ex.data_root, ex.download, data.test_y)
    model = create_model(spec.model, data.num_classes).to(device)
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True)["models"][0])
    if ex.channels_last:
        model = model.to(memory_format=torch.channels_last)
    z = np.load(run_dir / "noise.npz")
    val = None
    if "val_indices" in z.files and len(z["val_indices"]):
        val = (data.train_x[z["val_indices"]].to(device), torch.as_tensor(z["val_labels"], device=device))
    scores, rel, notes = score(model, test_x=data.test_x.to(device),
                               test_y=torch.as_tensor(data.test_y, device=device), ev=ev, val=val, human=human,
                               eval_batch_size=ex.eval_batch_size, channels_last=ex.channels_last)
    write_eval_record(run_dir, ev, scores, rel, notes, ex, device)
    return {**json.loads(path.read_text()), "status": "evaluated"}


def _mark_done(run_dir: Path) -> None:
    """Drop the training checkpoint, then DONE last (atomic rename): a DONE directory is never
    touched again."""
    m = json.loads((run_dir / "metrics.json").read_text())
    write_json(run_dir / "status.json", {"status": "done", "epochs": m["epochs"]})
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    write_text(run_dir / "DONE", f"{run_dir.name}\n")


def _save_checkpoint(path, models, optimizer, method, state) -> None:
    method_state = method.state_dict()
    if not isinstance(method_state, dict):
        raise ContractError(f"method {method.label!r}: state_dict() returned "
                            f"{type(method_state).__name__} (rule: state_dict() returns a dict)")
    torch.save({"models": [m.state_dict() for m in models], "optimizer": optimizer.state_dict(),
                "method": method_state, "state": state}, _tmp(path))
    os.replace(_tmp(path), path)


def _load_checkpoint(path, models, optimizer, method, device) -> dict:
    ck = torch.load(path, map_location=device, weights_only=False)
    for m, sd in zip(models, ck["models"]):
        m.load_state_dict(sd)
    optimizer.load_state_dict(ck["optimizer"])
    method.load_state_dict(ck["method"])
    return ck["state"]


def _check_existing(run_dir: Path, spec: RunSpec) -> None:
    f = run_dir / "spec.json"
    if f.exists():
        try:
            old = RunSpec.from_dict(json.loads(f.read_text())["spec"])
        except (ValueError, KeyError, TypeError, SpecError) as e:
            raise SpecError(f"{f} is unreadable ({e}); move {run_dir} away to rerun this spec") from None
        if old != spec:
            raise SpecError(f"{run_dir} holds a different run (its spec.json differs); move it away")


def _spec_record(spec, ex, device, source, method, num_meta: int) -> dict:
    seen = [f"{num_meta} clean, class-balanced images held out of the training set as the method's "
            "meta set (noise.npz: meta_indices)"] if num_meta else []
    if spec.val_split and spec.val_labels == "clean":
        seen.append(f"the clean labels of the {spec.val_split}-image validation split (choice of the "
                    "best epoch and temperature scaling only)")
    seen = "; ".join(seen) or "none"
    return {"run_id": spec.run_id, "spec": spec.to_dict(),
            "method": {"name": spec.method, "citation": method.citation, "options": spec.options,
                       "effective_options": method.effective_options(), "num_models": method.num_models,
                       "evaluated_model": "model 1 of 2 (models[0])" if method.num_models > 1 else "the model",
                       "clean_labels_seen": seen},
            "reporting": {"test_err_best": (
                              f"test_err of the epoch with the lowest val_err on the validation split "
                              f"({spec.val_split} images held out of the training set, {spec.val_labels} "
                              "labels; the earliest of equals)" if spec.val_split else
                              "lowest test_err over the epochs (the OLS code's reporting; no validation "
                              "split: pass --val-split N to choose the epoch without the test set)")
                          + (f"; with --test-subset the epochs before the last are measured on {spec.test_subset} "
                             "test images only, so this minimum is not comparable with test_err_last"
                             if spec.test_subset else ""),
                          "test_err_last": "test_err of the last epoch (always on the whole test set)",
                          "epoch_test": _epoch_test_rule(spec),
                          "scores": "clean_err, attacks, calibration and CIFAR-10H figures score the "
                                    "final model (last epoch); see evals/<eval_id>.json"},
            "execution": {"device": str(device), "device_name": device_name(device),
                          "channels_last": ex.channels_last, "amp": spec.amp,
                          "data_root": str(resolve_data_root(ex.data_root)), "data_source": source,
                          "torch_threads": torch.get_num_threads()},
            "versions": {"robustbench_ols": __version__, "torch": torch.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "git": git_info()}


def _epoch_test_rule(spec: RunSpec) -> str:
    """What epochs.csv's test_loss and test_err measure (also said in the report's figures)."""
    k = spec.test_every
    when = "every epoch" if k == 1 else f"every {k} epochs (epochs {k}, {2 * k}, ...) and the last (empty otherwise)"
    on = ("the whole test set" if not spec.test_subset else
          f"a fixed class-balanced subset of {spec.test_subset} test images (seed 0), the last epoch on the whole "
          "test set")
    return f"{when}, on {on}"


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # Linux names the CPU model here; platform.processor() is often empty
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_info() -> dict:
    """The commit of the package's source tree and whether it had uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty if commit else None}


def write_epochs_csv(path: Path, rows: list) -> None:
    write_csv(path, EPOCH_COLUMNS, rows)


def write_csv(path: Path, columns, rows: list) -> None:
    """A header of `columns`, then one line per dict of `rows` (floats by repr, None/NaN empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r[c]) for c in columns])
    write_text(path, buf.getvalue())


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""  # no value (no validation split; an empty reliability bin)
    return repr(v) if isinstance(v, float) else str(v)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
