"""Score a trained model: clean error, robust error under attacks, calibration (with temperature
scaling when the run has a validation split) and, on CIFAR-10, agreement with CIFAR-10H.

An `EvalSpec` says how a model is scored. It is not part of the run_id: one trained model can be
scored under many settings. Each setting has its own `eval_id` (12 hex of the SHA-256 of its canonical
form) and its own record `<run_dir>/evals/<eval_id>.json` (+ `<eval_id>.reliability.csv`, and with
attacks `<eval_id>.robust.npz`: each attacked image's outcome under each attack); a record,
once written to a finished run, is never overwritten. The evaluation a run does right after training
is also copied into its `metrics.json` and `reliability.csv`.

Scoring is float32 (even for a run trained with --amp) and in eval mode, on the whole test set for the
clean and calibration figures, and on a fixed, seeded, class-balanced test subset for the attacks when
`attack_examples` > 0. `attack_amp` runs the attacks (and the classification of their images) under
bf16 autocast instead: faster on GPUs and CPUs with bf16 units (1.7-2.0x on an AVX-512 BF16 EPYC), ~10x
slower on CPUs without them (AVX2 only), and not the default for reported scores; it has its own eval_id.
With two or more attacks at one budget, `worst_err` is the per-image worst case over them; with any
attack, the gradient-masking checks (attacks/sanity.py) run on a subset of the attacked images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robustbench_ols.attacks.parameter_free import Square
from robustbench_ols.attacks.robust import attack_outcomes, errors, fold_batchnorm
from robustbench_ols.attacks.sanity import run_checks
from robustbench_ols.attacks.spec import DEFAULT_EPS, WorstCase
from robustbench_ols.common import progress as progress_bars
from robustbench_ols.common.errors import DataError, SpecError
from robustbench_ols.common.provenance import Timer
from robustbench_ols.data import class_balanced_subset
from robustbench_ols.models.inference import predict_logits
from robustbench_ols.scoring.calibration import (
    apply_temperature,
    calibration_metrics,
    fit_temperature,
    reliability_table,
)
from robustbench_ols.scoring.calibration.modern import SMECE_RESAMPLES, modern_metrics, top_label
from robustbench_ols.scoring.calibration.selective import LOGIT_NORM_P, logit_norm_confidence, selective_metrics
from robustbench_ols.scoring.cifar10h import cifar10h_metrics, load_cifar10h
from robustbench_ols.spec import EvalSpec

# the calibration figures recomputed after temperature scaling, recorded as <key>_ts
TS_KEYS = ("ece", "aece", "ece_debiased", "smece", "smece_lo", "smece_hi", "smece_boot_bias", "aurc", "augrc",
           "cov_at_5risk", "risk_at_80cov", "nll")


def attack_subset(test_y: np.ndarray, ev: EvalSpec) -> np.ndarray:
    """Test-set indices the attacks run on: all, or a class-balanced subset seeded by attack_seed."""
    if not ev.attack_examples:
        return np.arange(len(test_y))
    k, n = len(np.unique(test_y)), len(test_y)
    if not k <= ev.attack_examples <= n:
        raise SpecError(f"--attack-examples {ev.attack_examples} must lie between the number of classes "
                        f"({k}) and the test set size ({n}); use 0 for the whole test set")
    return class_balanced_subset(test_y, ev.attack_examples, ev.attack_seed)


def load_human(dataset: str, ev: EvalSpec, data_root, download: bool, test_y):
    """The CIFAR-10H array when this evaluation needs it (CIFAR-10 with cifar10h on), else None.
    Loaded before training so that a missing file fails the run before anything is written."""
    if dataset != "cifar10" or not ev.cifar10h:
        return None
    try:
        return load_cifar10h(data_root, test_labels=test_y, download=download)
    except DataError as e:
        raise DataError(f"{e} To score without the CIFAR-10H figures, pass --no-cifar10h.") from None


def _logits(model, images, *, batch_size, channels_last, bar=None) -> torch.Tensor:
    chunks = []
    for z in predict_logits(model, images, batch_size=batch_size, channels_last=channels_last, amp=False):
        chunks.append(z)
        if bar is not None:
            bar.update(1)
    return torch.cat(chunks)


def _batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


@dataclass
class Scores:
    """What scoring a model gives: the record's metrics, the reliability rows, notes (how it was done),
    the gradient-masking checks' details (None when they did not run), the per-image attack outcomes
    (arrays for `evals/<eval_id>.robust.npz`; None without attacks) and each test image's top-label
    confidence and correctness (`evals/<eval_id>.predictions.npz`: smoothed reliability diagrams and
    bootstraps over images are drawn from it)."""
    metrics: dict
    reliability: list
    notes: dict
    checks: dict | None = None
    outcomes: dict | None = None
    predictions: dict | None = None
    shift_rows: list | None = None  # --shift corruptions: evals/<eval_id>.corruptions.csv (scoring/shift.py)


def labelled_test_images(data, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images (uint8) and labels of `data` on `device`."""
    return data.test_x.to(device), torch.as_tensor(data.test_y, device=device)


def score_with(model, test, ev: EvalSpec, ex, *, val=None, human=None) -> "Scores":
    """`score` run as the execution options `ex` say (batch size, memory format, progress bar): the one call behind
    a run's final scoring, `rbols eval` and `rbols score`. `test`: (images, labels) on the model's device."""
    out = score(model, test_x=test[0], test_y=test[1], ev=ev, val=val, human=human,
                eval_batch_size=ex.eval_batch_size, channels_last=ex.channels_last, progress=ex.progress,
                progress_position=ex.progress_position)
    if ev.shift == "corruptions":
        from robustbench_ols.scoring.shift import score_corruptions  # loads the corruptions package's stack
        figures, out.shift_rows, out.notes["shift"] = score_corruptions(
            model, test[0], test[1], ev, data_root=ex.data_root, batch_size=ex.eval_batch_size,
            channels_last=ex.channels_last)
        out.metrics.update(figures)
    return out


def score(model, *, test_x: torch.Tensor, test_y: torch.Tensor, ev: EvalSpec, val=None, human=None,
          eval_batch_size: int = 256, channels_last: bool = False, progress: bool = False,
          progress_position: int | None = None) -> Scores:
    """Score `model` on uint8 `test_x` (on the model's device).

    `val`: (uint8 images, labels) of the run's validation split, or None (temperature scaling is then
    skipped: `temperature`, `ece_ts` and `nll_ts` are None and `notes` says why). `human`: the
    CIFAR-10H array, or None for no human-agreement figures (they are then absent). `progress`: a bar
    over the clean pass and each attack's batches, named after the stage it is in.
    """
    timer = Timer()
    sub = torch.as_tensor(attack_subset(test_y.cpu().numpy(), ev), device=test_x.device)
    attacks = ev.attack_specs
    bar = progress_bars.bar(_batches(len(test_x), eval_batch_size)
                            + len(attacks) * _batches(len(sub), ev.attack_batch_size),
                            "scoring: clean pass", "batch", enabled=progress,
                            position=progress_position, leave=progress_position is None)
    logits = _logits(model, test_x, batch_size=eval_batch_size, channels_last=channels_last, bar=bar)
    num_classes = logits.shape[1]
    y = test_y.to(logits.device).long()
    m = {"clean_err": (logits.argmax(1) != y).double().mean().item()}
    if num_classes > 10:
        m["clean_err_top5"] = (~(logits.topk(5, 1).indices == y[:, None]).any(1)).double().mean().item()
    probs = logits.double().softmax(1)
    m.update(_calibration(probs, y, ev))
    rel = reliability_table(probs, y, n_bins=ev.n_bins).rows()
    notes = {"smece": f"relplot smECE; interval: {SMECE_RESAMPLES}-resample basic bootstrap over the test "
                      "images (seed 0), widened to reach the estimate where it misses it (an upward bias "
                      "beyond ~2 bootstrap standard errors); smece_boot_bias: resamples' mean minus estimate",
             "ece_debiased": f"Kumar et al. 2019 debiased top-label L2 ECE, {ev.n_bins} equal-mass bins"}
    y_np = y.cpu().numpy()
    conf, correct = top_label(probs.cpu().numpy(), y_np)
    # selective prediction by the logit-normalised score (temperature-free, so no _ts twin): the _ln keys
    m.update({f"{k}_ln": v for k, v in selective_metrics(logit_norm_confidence(logits.cpu()), correct).items()})
    notes["selective"] = ("aurc, augrc, cov_at_5risk, risk_at_80cov by the maximum softmax probability (and after "
                          "temperature scaling: _ts); _ln by the logit-normalised score max(z - mean z) / "
                          f"||z - mean z||_{LOGIT_NORM_P:g} (Xia et al. 2025; scoring/calibration/selective.py)")
    predictions = {"confidence": conf.astype(np.float32), "correct": correct.astype(bool)}
    if val is not None and len(val[0]):
        vz = _logits(model, val[0], batch_size=eval_batch_size, channels_last=channels_last)
        t = fit_temperature(vz, val[1].to(vz.device))
        probs_ts = apply_temperature(logits.double(), t).softmax(1)
        m.update(temperature=float(t), **{f"{k}_ts": v for k, v in _calibration(probs_ts, y, ev).items()
                                          if k in TS_KEYS})
        predictions["confidence_ts"] = top_label(probs_ts.cpu().numpy(), y_np)[0].astype(np.float32)
        notes["temperature_scaling"] = (f"temperature fitted by NLL on the run's validation split "
                                        f"({len(val[0])} images) and applied to the test logits")
    else:
        m.update(temperature=None, **{f"{k}_ts": None for k in TS_KEYS})
        notes["temperature_scaling"] = "skipped: the run has no validation split (--val-split 0)"
    if human is not None:
        m.update(cifar10h_metrics(probs.cpu().numpy(), y.cpu().numpy(), human))
    out = Scores(m, rel, notes, predictions=predictions)
    m["attack_examples"] = int(len(sub))
    notes["attacks"] = (f"{', '.join(ev.attacks) or 'none'} on "
                        + (f"a class-balanced subset of {len(sub)} test images (seed {ev.attack_seed})"
                           if ev.attack_examples else f"the whole test set ({len(sub)} images)"))
    if attacks:
        _attack(model, test_x[sub], y.to(test_x.device)[sub], sub, ev, out, num_classes=num_classes,
                channels_last=channels_last, bar=bar)
    if bar is not None:
        bar.close()
    m["eval_seconds"] = timer.seconds()
    notes["precision"] = ("float32, eval mode (batch-norm running statistics), no augmentation" +
                          ("; the attacks under bf16 autocast (--attack-amp)" if ev.attack_amp else ""))
    return out


def _attack(model, ax, ay, sub, ev: EvalSpec, out: Scores, *, num_classes, channels_last, bar) -> None:
    """The attacks, their per-image outcomes, the worst case over them at each budget and the checks."""
    m, notes = out.metrics, out.notes
    # one eval-mode copy with the batch norms folded into the convolutions for every attack: the same
    # function up to float rounding, about 1.2x faster to attack (attacks.fold_batchnorm)
    folded = fold_batchnorm(model, channels_last=channels_last)
    attacked = folded if folded is not None else model
    notes["attack_model"] = ("the model with its batch norms folded into the convolutions before them (the "
                             "same function up to float rounding)" if folded is not None else
                             "the model as trained (torch.fx could not trace it to fold its batch norms)")
    if ev.attack_amp:
        attacked = Bf16(attacked).eval()
    with torch.no_grad():
        clean_wrong = torch.cat([z.argmax(1).cpu() for z in predict_logits(
            attacked, ax, batch_size=ev.attack_batch_size, channels_last=channels_last)]) != ay.cpu()
    fooled = {}
    for spec in ev.attack_specs:
        if bar is not None:
            bar.set_description(f"scoring: {spec.label}")
        res = attack_outcomes(attacked, ax, ay, spec, seed=ev.attack_seed, batch_size=ev.attack_batch_size,
                              channels_last=channels_last, topk=5 if num_classes > 10 else 1, fold_bn=False,
                              on_batch=None if bar is None else bar.update,
                              per_image_starts=ev.attack_starts == "per-image")
        fooled[spec] = res.fooled
        m.update(errors(spec, res, 5 if num_classes > 10 else 1))
        if res.messages:
            notes.setdefault("attack_warnings", {})[spec.label] = res.messages
    m.update(worst_case(fooled, clean_wrong))
    out.outcomes = {"test_index": sub.cpu().numpy(), "label": ay.cpu().numpy(), "clean_wrong": clean_wrong.numpy(),
                    **{spec.key[:-len("_err")]: f.numpy() for spec, f in fooled.items()}}
    if ev.checks:
        _check(attacked, ax, ay, ev, out, clean_wrong, fooled, channels_last=channels_last, bar=bar)


def _calibration(probs: torch.Tensor, y: torch.Tensor, ev: EvalSpec) -> dict:
    """The binned figures (calibration_metrics) and the recent ones (smooth ECE with its interval,
    debiased ECE, AURC: calibration.modern) of the test probabilities."""
    return {**calibration_metrics(probs, y, n_bins=ev.n_bins),
            **modern_metrics(probs.cpu().numpy(), y.cpu().numpy(), n_bins=ev.n_bins)}


def worst_case(fooled: dict, clean_wrong: torch.Tensor) -> dict:
    """`worst_err` (`worst_eps2_err` at 2/255, ...): the share of images that at least one attack at that
    budget fooled (or that were wrong already), for each budget at which two or more attacks ran."""
    by_eps = {}
    for spec, f in fooled.items():
        by_eps.setdefault(spec.eps, []).append(f)
    return {WorstCase(eps).key: torch.stack([clean_wrong, *fs]).any(0).double().mean().item()
            for eps, fs in by_eps.items() if len(fs) > 1}


def _check(attacked, ax, ay, ev: EvalSpec, out: Scores, clean_wrong, fooled: dict, *, channels_last, bar) -> None:
    pos = np.arange(len(ay)) if not ev.check_examples or ev.check_examples >= len(ay) else \
        class_balanced_subset(ay.cpu().numpy(), ev.check_examples, ev.attack_seed)
    idx = torch.as_tensor(pos)
    white = {s: f[idx] for s, f in fooled.items() if abs(s.eps - DEFAULT_EPS) < 1e-12 and s.white_box}
    square = next((f[idx] for s, f in fooled.items() if s == Square()), None)
    on_stage = None if bar is None else bar.set_description
    figures, details = run_checks(attacked, ax[idx.to(ax.device)], ay[idx.to(ay.device)],
                                  clean_wrong=clean_wrong[idx], white_box=white, square=square,
                                  sweep=ev.eps_sweep, seed=ev.attack_seed, batch_size=ev.attack_batch_size,
                                  channels_last=channels_last, on_stage=on_stage,
                                  per_image_starts=ev.attack_starts == "per-image")
    out.metrics.update(figures)
    out.checks = details
    out.outcomes["check_position"] = pos
    out.notes["checks"] = (f"gradient-masking checks on a class-balanced subset of {len(pos)} of the attacked "
                           "images (attacks/sanity.py); failed: " + (figures["masking_checks"] or "none"))


class Bf16(torch.nn.Module):
    """`model` under bf16 autocast on its device, returning float32 logits (for --attack-amp)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()
