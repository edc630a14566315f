"""One run, end to end, in a write-once directory `<out>/<run_id>/` (its files: store/).

`execute` reads as the pipeline: data -> noise -> method -> fit -> score -> store. Everything is validated
before anything is written, and a finished run is never retrained.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustbench_ols import store
from robustbench_ols.common.errors import ContractError, Interrupted, RunFailed, SpecError
from robustbench_ols.common.provenance import device_name, git_info, versions
from robustbench_ols.data import ImageData, TrainLoader, class_balanced_subset
from robustbench_ols.data.files import resolve_data_root
from robustbench_ols.data.noise import NoisyLabels, noisy_labels_for
from robustbench_ols.methods import FitInfo
from robustbench_ols.models import compiling, precision
from robustbench_ols.models.inference import resolve_device
from robustbench_ols.scoring.evaluation import attack_subset, load_human, score_with
from robustbench_ols.scoring.rescoring import evaluate_run
from robustbench_ols.scoring.transfer_check import add_transfer, check_transfer_from
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.spec.resolve import ResolvedRun, resolve
from robustbench_ols.store import evals as evals_store
from robustbench_ols.trackers.session import Trackers, open_trackers
from robustbench_ols.train.final_metrics import final_metrics
from robustbench_ols.train.selection import keep_weights, model_at, selected_epoch, write_kept
from robustbench_ols.train.training import NonFinite, fit, make_optimizer


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "done" or "already done"
    metrics: dict


def execute(spec: RunSpec, ex: ExecOptions = ExecOptions(), out="results", ev: EvalSpec = EvalSpec(),
            transfer_from=None) -> RunResult:
    """Train (or resume, or skip when DONE) the run `spec` under `out`, then score the model of the epoch
    `ev` selects (the final one by default) and, where its hard-label surrogate (`transfer_from`, else the hard-label run beside it) has
    finished, the transfer check. A finished run is never retrained; if it has no record for `ev` yet, one
    is added."""
    device = resolve_device(ex.device)
    r = resolve(spec)  # every name and option checked before anything is read or written
    if ex.compile:
        compiling.check_supported(device)
    out = Path(out)
    store.ensure_writable(out)
    if transfer_from is not None:
        check_transfer_from(transfer_from, spec, out / spec.run_id)
    if ev.select == "noisy-val" and not spec.has_noisy_val:
        raise SpecError("--select noisy-val scores the epoch with the lowest error on a noisy validation split, and "
                        "this run holds none: add --noisy-val [SHARE] (or use --select last or oracle)")
    run_dir = out / spec.run_id
    if store.is_done(run_dir):
        return _already_done(run_dir, ev, ex, transfer_from=transfer_from)
    store.check_existing(run_dir, spec)
    if store.has(run_dir, "metrics"):  # killed after the final files, before DONE
        store.mark_done(run_dir)
        return _already_done(run_dir, ev, ex, status="done", transfer_from=transfer_from)
    x = _inputs(r, ex, ev, device)  # data -> noise -> held-out sets (may still reject the input)
    numerics = precision.apply(ex, device, spec.amp)  # before any GPU work: cuBLAS reads its workspace setting once
    numerics["compile"] = compiling.record(ex.compile)
    amp = precision.AMP_DTYPES.get(numerics["autocast"], False)
    torch.manual_seed(spec.seed)  # model initialisation
    models = [r.make_model(x.data.num_classes).to(device) for _ in range(r.method.num_models)]
    if ex.channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
    loader = TrainLoader(x.train_x, x.labels, spec.batch_size, seed=spec.seed, augment=spec.augment,
                         channels_last=ex.channels_last)
    r.method.setup(FitInfo(
        x.data.num_classes, len(x.labels), x.labels, spec.epochs, len(loader), device, spec.dataset,
        spec.seed, train_images=x.train_x, channels_last=ex.channels_last, amp=amp,
        noise_rate=r.noise.expected_wrong_rate(x.data.num_classes, x.data.name, x.data.fine_to_coarse),
        lr_at=spec.lr_at, meta_images=x.meta[0] if x.meta else None, meta_labels=x.meta[1] if x.meta else None))
    optimizer = make_optimizer(spec, models)
    record = _spec_record(r, ex, device, x.data.source, x.num_meta, numerics)
    # --log: opened before the first file, so that a tracker that cannot open loses nothing
    tr = open_trackers(ex.log, run_dir, record, ex.log_dir or out / "tracking", warn=_warn)
    with tr:  # each tracker closed as finished, interrupted (Ctrl-C) or failed
        # the first file: spec.json, the noisy labels and which images each split holds
        created = not run_dir.exists()
        store.write_record(run_dir, record, x.noisy.summary(), x.arrays)
        state = (store.load_checkpoint(run_dir, models, optimizer, r.method, device, warn=_warn)
                 or {"epoch": -1, "history": [], "train_seconds": 0.0})
        store.log_execution(run_dir, device, ex.channels_last, state["epoch"] + 1, numerics)
        tr.epochs(state["history"])  # a resumed run: the checkpoint's epochs (each tracker keeps one copy)
        stage = "training"
        try:
            _fit(r, ex, run_dir, models, optimizer, loader, state, x, tr, amp, created)
            stage = "scoring"
            metrics = final_metrics(state, x.noisy.rate, int(x.noisy.is_noisy.sum()), len(x.labels), x.num_meta,
                                     x.num_val)
            write_kept(run_dir, state, store.save_torch)  # the selections' weights, from the checkpoint's state
            # the model of the epoch the scoring setting selects (the final one unless --select)
            scored, epoch = model_at(run_dir, ev.select, models[0], state["history"], device,
                                     noisy_val=spec.has_noisy_val)
            scores = score_with(scored, x.test, ev, ex, val=x.val, human=x.human)
        except KeyboardInterrupt:
            kept = state["epoch"] + 1  # epochs in the checkpoint
            store.set_status(run_dir, "interrupted", stage=stage, epochs_kept=kept)
            where = (f"at epoch {kept + 1} of {spec.epochs}" if stage == "training"
                     else f"while scoring, after all {spec.epochs} epochs")
            raise Interrupted(f"interrupted {where}; the checkpoint keeps {kept} epoch(s) of {run_dir}: run the "
                              "same command to resume") from None
        store.save_final(run_dir, models, r.method)
        scores.metrics.update(selected_epoch(epoch))
        evals_store.write_eval_record(run_dir, ev, scores, ex.channels_last, device)
        metrics = {**metrics, **scores.metrics, "eval_id": ev.eval_id}
        store.finish(run_dir, metrics, scores.reliability)
        tr.finish(metrics)
    add_transfer(run_dir, ev, ex, transfer_from)  # after DONE: it reads the finished run like any other
    return RunResult(run_dir, "done", evals_store.metrics_for(run_dir, ev.eval_id))


@dataclass
class Inputs:
    """What a run trains and is tested on, on its device: the noisy training set and the held-out sets."""
    data: ImageData
    noisy: NoisyLabels  # of every image of the subset (the held-out ones included)
    train_x: torch.Tensor  # the images trained on, and their noisy labels
    labels: torch.Tensor
    is_noisy: torch.Tensor  # which of them carry a wrong label, and their clean labels (statistics only)
    clean: torch.Tensor
    test: tuple  # (images, labels): the whole test set
    epoch_test: tuple  # the per-epoch test pass's images (--test-subset)
    val: tuple | None  # the validation split (--val-split)
    meta: tuple | None  # the method's clean meta set (clean_meta_size)
    human: object  # the CIFAR-10H array when scored against it
    arrays: dict  # noise.npz

    @property
    def num_meta(self) -> int:
        return 0 if self.meta is None else len(self.meta[1])

    @property
    def num_val(self) -> int:
        return 0 if self.val is None else len(self.val[1])


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _inputs(r: ResolvedRun, ex: ExecOptions, ev: EvalSpec, device) -> Inputs:
    spec = r.spec
    # The synthetic set has a fixed data seed: its labels must not change with --seed.
    data = r.load_data(spec.dataset, ex.data_root, download=ex.download, verify=True, seed=0)
    attack_subset(data.test_y, ev)  # rejects a bad --attack-examples now, not after training
    test_positions = epoch_test_subset(data.test_y, spec.test_subset)
    human = load_human(spec.dataset, ev, ex.data_root, ex.download, data.test_y)
    idx = (class_balanced_subset(data.train_y, spec.train_subset, spec.subset_seed)
           if spec.train_subset else np.arange(len(data.train_y)))
    k = data.num_classes
    if spec.train_subset % k:
        n, extra = spec.train_subset, spec.train_subset % k
        _warn(f"note: --train-subset {n} is not a multiple of the {k} classes: {extra} classes drawn with "
              f"--subset-seed {spec.subset_seed} get {n // k + 1} images, the other {k - extra} get {n // k} "
              "(noise.npz: train_indices)")
    noisy = noisy_labels_for(data, idx, r.noise, spec.noise_seed, ex.data_root)
    clean = data.train_y[idx]
    # MW-Net-style methods get a clean, balanced meta set held out of the subset AFTER the noise is
    # drawn, so the images they train on carry exactly the noisy labels every other method sees. The
    # validation split is held out the same way, from what is left.
    train_pos, meta_pos = _hold_out(clean, np.arange(len(clean)), r.method.clean_meta_size(),
                                    spec.subset_seed + 7919, "the method's clean meta set (its meta= option)")
    if spec.noisy_val:  # balanced by the noisy labels: choosing the epoch uses no clean label at all
        train_pos, val_pos = _hold_out(noisy.labels, train_pos, round(spec.noisy_val * len(train_pos)),
                                       spec.subset_seed + 104729, f"--noisy-val {spec.noisy_val:g}")
    else:
        train_pos, val_pos = _hold_out(clean, train_pos, spec.val_split, spec.subset_seed + 104729, "--val-split")
    val_labels = (clean if spec.val_labels == "clean" else noisy.labels)[val_pos]

    def on_device(images, labels):
        return images.to(device), torch.as_tensor(labels, device=device)
    test = on_device(data.test_x, data.test_y)
    test_pos = torch.as_tensor(test_positions, device=device)
    return Inputs(
        data, noisy, *on_device(data.train_x[idx[train_pos]], noisy.labels[train_pos]),
        torch.as_tensor(noisy.is_noisy[train_pos], device=device), torch.as_tensor(clean[train_pos], device=device),
        test, (test[0][test_pos], test[1][test_pos]) if spec.test_subset else test,
        on_device(data.train_x[idx[val_pos]], val_labels) if len(val_pos) else None,
        on_device(data.train_x[idx[meta_pos]], clean[meta_pos]) if len(meta_pos) else None, human,
        dict(noisy_labels=noisy.labels, clean_labels=clean, is_noisy=noisy.is_noisy, train_indices=idx, T=noisy.T,
             meta_indices=idx[meta_pos], val_indices=idx[val_pos], val_labels=val_labels))


def _fit(r: ResolvedRun, ex: ExecOptions, run_dir: Path, models, optimizer, loader, state: dict, x: Inputs,
         tr: Trackers, amp, created: bool) -> None:
    """training.fit (compiled with --compile) with a checkpoint, epochs.csv and the trackers' epoch after every
    epoch. A failure is recorded in status.json; an op --deterministic refuses, or a step --compile cannot
    compile, exits 2 naming it, and before the first epoch is kept it removes the directory this command created
    (nothing written: the same command without the flag starts afresh)."""
    def checkpoint(state):
        # the weights of the epoch each selection chooses so far, saved with the checkpoint (selection.py)
        keep_weights(state, models[0], noisy_val=r.spec.has_noisy_val)
        store.save_checkpoint(run_dir, models, optimizer, r.method, state)
        store.write_epochs_csv(run_dir, state["history"])
        tr.epoch(state["history"][-1], state["history"][-1]["epoch"])
    try:
        with compiling.compiled(models, ex.compile):
            fit(r.spec, models, r.method, optimizer, loader, state, is_noisy=x.is_noisy, clean=x.clean, test=x.test,
                epoch_test=x.epoch_test, val=x.val, eval_batch_size=ex.eval_batch_size,
                channels_last=ex.channels_last, progress=ex.progress, progress_position=ex.progress_position,
                on_epoch_end=checkpoint, amp=amp)
    except NonFinite as e:
        store.set_status(run_dir, "failed", epoch=e.epoch, reason=e.reason)
        raise RunFailed(f"run {run_dir} failed: {e.reason}; the checkpoint of the last good epoch "
                        "is kept. Lower --lr or check the method's options.") from None
    except ContractError as e:
        store.set_status(run_dir, "failed", epoch=state["epoch"] + 2, reason=str(e))
        raise e from None
    except RuntimeError as e:
        refused = precision.deterministic_error(e) or (compiling.compile_error(e) if ex.compile else None)
        if refused is None:
            raise
        if created and state["epoch"] < 0:
            shutil.rmtree(run_dir)
        else:
            store.set_status(run_dir, "failed", epoch=state["epoch"] + 2, reason=str(refused))
        raise refused from None


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


def _already_done(run_dir: Path, ev: EvalSpec, ex: ExecOptions, status: str = "already done",
                  transfer_from=None) -> RunResult:
    """A finished run: its metrics.json, with the figures of `ev` (evaluated now if missing, and the transfer
    check where it can be added)."""
    evaluate_run(run_dir, ev, ex, transfer_from)
    return RunResult(run_dir, status, evals_store.metrics_for(run_dir, ev.eval_id))


def _hold_out(clean: np.ndarray, positions: np.ndarray, size: int, seed: int, what: str):
    """(kept, held out): `size` positions taken out of `positions`, class-balanced by `clean` (the labels
    given: the clean ones, or the noisy ones for --noisy-val)."""
    if size <= 0:
        return positions, positions[:0]
    k = len(np.unique(clean[positions]))
    if not k <= size < len(positions):
        raise SpecError(f"{what} asks for {size} held-out images, but {len(positions)} images of {k} classes "
                        "are left: it needs one image per class and must leave images to train on; "
                        "lower it or raise --train-subset")
    held = positions[class_balanced_subset(clean[positions], size, seed)]  # its own stream, fixed per subset
    return np.setdiff1d(positions, held), held


def _spec_record(r: ResolvedRun, ex, device, source, num_meta: int, numerics: dict) -> dict:
    spec, method = r.spec, r.method
    seen = [f"{num_meta} clean, class-balanced images held out of the training set as the method's "
            "meta set (noise.npz: meta_indices)"] if num_meta else []
    if spec.val_split and spec.val_labels == "clean":
        seen.append(f"the clean labels of the {spec.val_split}-image validation split (choice of the "
                    "best epoch and temperature scaling only)")
    seen = "; ".join(seen) or "none"
    return {"run_id": spec.run_id, "spec": spec.to_dict(),
            "method": {"name": spec.method, "label": r.label, "citation": method.citation, "options": spec.options,
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
                          "channels_last": ex.channels_last, "amp": spec.amp, "precision": numerics,
                          "data_root": str(resolve_data_root(ex.data_root)), "data_source": source,
                          "torch_threads": torch.get_num_threads()},
            "versions": versions(full=True),
            "git": git_info()}


def _epoch_test_rule(spec: RunSpec) -> str:
    """What epochs.csv's test_loss and test_err measure (also said in the report's figures)."""
    k = spec.test_every
    when = "every epoch" if k == 1 else f"every {k} epochs (epochs {k}, {2 * k}, ...) and the last (empty otherwise)"
    on = ("the whole test set" if not spec.test_subset else
          f"a fixed class-balanced subset of {spec.test_subset} test images (seed 0), the last epoch on the whole "
          "test set")
    return f"{when}, on {on}"


