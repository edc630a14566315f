"""Checks that a robust error is not an artefact of gradient masking (Athalye et al. 2018; Carlini et al.
2019, "On evaluating adversarial robustness", whose checklist these follow; AutoAttack's own flags).

Run on a fixed class-balanced subset of the attacked images (`check_examples`), at 8/255 where a check
needs one budget, each check gives a figure and passes or fails against a named threshold:
  eps_zero    PGD-20 at eps 0 leaves the clean error as it is (exactly)
  monotone    robust error along the eps sweep (PGD-20, alpha = eps/4) never drops by more than
              MONOTONE_SLACK from one budget to the next
  large_eps   at the sweep's largest budget (64/255 by default) the error reaches LARGE_EPS_MIN_ERR
  more_steps  PGD-100 with MORE_STEPS_RESTARTS restarts does not lower PGD-20's error by more than
              MONOTONE_SLACK (a weaker result from a stronger attack means an unreliable gradient)
  square      the black-box Square attack fools at most SQUARE_EXCESS_MAX of the images that every
              white-box attack at 8/255 left correct
  zero_grad   at most ZERO_GRAD_MAX of the images have an input gradient of the loss that is exactly
              zero or not finite
`masking_suspected` lists the checks that failed. As everywhere (AutoAttack's convention), an image
already misclassified counts as fooled and is not attacked again in the checks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_ols.attacks.robust import attack_outcomes
from robustbench_ols.attacks.spec import DEFAULT_SWEEP, PGD, AttackSpec

# PGD from a random start is a heuristic: one image of 100 may go either way between two neighbouring
# budgets or two attacks without anything being wrong.
MONOTONE_SLACK = 0.01
# Carlini et al. expect 100%; 2 points of slack (two of the default 100 images) so that a single odd
# image cannot flag a model on its own.
LARGE_EPS_MIN_ERR = 0.98
LARGE_EPS = 64 / 255  # the large_eps check runs when the sweep reaches at least this budget
MORE_STEPS_RESTARTS = 2
# AutoAttack flags Square when it lowers the robust accuracy by 0.2 points after the white-box attacks
# (checks.check_square_sr, alpha=.002) on its 10,000 images; on 100 images one image is 1 point, so the
# threshold here lets one image in 100 through.
SQUARE_EXCESS_MAX = 0.01
SQUARE_QUERIES = 5000  # AutoAttack's standard budget
# AutoAttack warns on a single zero-gradient image (checks.check_zero_gradients); an ordinary model can
# saturate its softmax on an odd image, so more than one in 100 fails.
ZERO_GRAD_MAX = 0.01

CHECKS = ("eps_zero", "monotone", "large_eps", "more_steps", "square", "zero_grad")


def sweep_spec(eps_255: float) -> AttackSpec:
    """PGD-20 at eps/255 with PGD's default step, eps/4 (Madry et al.'s 2/255 at 8/255)."""
    return PGD(eps=eps_255 / 255, steps=20)


def zero_gradient_share(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of images whose cross-entropy gradient w.r.t. the input is all zeros or has a non-finite entry."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    flat = grad.reshape(len(x), -1)
    bad = (flat == 0).all(1) | ~torch.isfinite(flat).all(1)
    return bad.double().mean().item()


def run_checks(model, images: torch.Tensor, labels: torch.Tensor, *, clean_wrong: torch.Tensor,
               white_box: dict, square: torch.Tensor | None, sweep=DEFAULT_SWEEP, seed: int = 0,
               batch_size: int = 256, channels_last: bool = False, on_stage=None,
               per_image_starts: bool = True) -> tuple[dict, dict]:
    """(figures for the record's metrics, per-check details) for `model` (already the attacked copy) on
    uint8 `images` with `labels`. `clean_wrong`: the model's clean mistakes on them; `white_box`:
    AttackSpec -> fooled (bool per image) of the white-box attacks the evaluation already ran at 8/255
    on these images (a sweep point among them, such as the default PGD-20, is not run again); `square`:
    Square's fooled at 8/255 when the evaluation ran it, else Square runs here on the images nothing
    else fooled. `on_stage(text)`: progress."""
    stage = on_stage or (lambda text: None)
    n = len(images)
    correct = ~clean_wrong
    kw = dict(batch_size=batch_size, channels_last=channels_last, fold_bn=False, per_image_starts=per_image_starts)

    def fooled_by(spec: AttackSpec, among: torch.Tensor, attack_seed: int) -> torch.Tensor:
        """clean mistakes, plus the images of `among` the attack fools"""
        out = clean_wrong.clone()
        idx = among.nonzero().flatten()
        if len(idx):
            out[idx] = attack_outcomes(model, images[idx], labels[idx], spec, seed=attack_seed, **kw).fooled
        return out

    curve = {}
    for e in sorted(sweep):
        stage(f"checks: PGD-20 at {e:g}/255")
        if sweep_spec(e) in white_box:
            curve[e] = white_box[sweep_spec(e)]
        elif e == 0:  # every image, so that a clean mistake undone by the "attack" shows
            curve[e] = attack_outcomes(model, images, labels, sweep_spec(0), seed=seed, **kw).fooled
        else:
            curve[e] = fooled_by(sweep_spec(e), correct, seed)
    err = {e: f.double().mean().item() for e, f in curve.items()}
    clean_err = clean_wrong.double().mean().item()
    results = {"eps_zero": (err[0] == clean_err if 0 in err else None,
                            {"eps0_err": err.get(0), "clean_err": clean_err})}
    budgets = sorted(err)
    drops = [err[a] - err[b] for a, b in zip(budgets, budgets[1:])]
    results["monotone"] = (max(drops, default=0) <= MONOTONE_SLACK, {"largest_drop": max(drops, default=0.0)})
    top = budgets[-1] if budgets else 0
    results["large_eps"] = ((err[top] >= LARGE_EPS_MIN_ERR) if top / 255 >= LARGE_EPS - 1e-12 else None,
                            {"eps": f"{top:g}/255", "err": err.get(top)})

    stage(f"checks: PGD-100 x {MORE_STEPS_RESTARTS} restarts")
    strong = clean_wrong.clone()
    for r in range(MORE_STEPS_RESTARTS):
        strong |= fooled_by(PGD(steps=100), correct & ~strong, seed + 1000 * (r + 1))
    pgd20 = curve[8] if 8 in curve else white_box.get(PGD())
    if pgd20 is None:
        pgd20 = fooled_by(PGD(), correct, seed)
    strong_err, pgd20_err = strong.double().mean().item(), pgd20.double().mean().item()
    results["more_steps"] = (strong_err >= pgd20_err - MONOTONE_SLACK,
                             {"pgd20_err": pgd20_err, "pgd100_restarts_err": strong_err})

    any_white = clean_wrong | pgd20 | strong
    for f in white_box.values():
        any_white |= f
    if square is None:
        stage("checks: Square on the images the white-box attacks left")
        square = fooled_by(AttackSpec.parse(f"square:queries={SQUARE_QUERIES}"), ~any_white, seed)
    excess = (square & ~any_white).double().mean().item()
    results["square"] = (excess <= SQUARE_EXCESS_MAX, {"square_only_share": excess})

    stage("checks: input gradients")
    shares = []
    for i in range(0, n, batch_size):
        x = images[i:i + batch_size].float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        shares.append(zero_gradient_share(model, x, labels[i:i + batch_size]) * len(x))
    zero = sum(shares) / max(n, 1)
    results["zero_grad"] = (zero <= ZERO_GRAD_MAX, {"share": zero})

    failed = [c for c in CHECKS if results[c][0] is False]
    thresholds = {"eps_zero": "equal", "monotone": MONOTONE_SLACK, "large_eps": LARGE_EPS_MIN_ERR,
                  "more_steps": MONOTONE_SLACK, "square": SQUARE_EXCESS_MAX, "zero_grad": ZERO_GRAD_MAX}
    details = {c: {"passed": results[c][0], "threshold": thresholds[c], **results[c][1]} for c in CHECKS}
    figures = {"check_examples": n, "masking_suspected": bool(failed), "masking_checks": ",".join(failed),
               **{f"sweep_eps{e:g}_err": err[e] for e in budgets},
               "check_pgd100_restarts_err": strong_err, "check_square_only": excess, "check_zero_grad": zero}
    return figures, details
