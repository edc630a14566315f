"""The transfer check: is a model's robust error lower under its own gradients than under adversarial images
crafted on another model? If it is, its gradients mislead the white-box attacks (gradient masking).

Label smoothing is the known case: an LS model reaches a high PGD accuracy that "cannot defend attacks
transferred from a naturally trained model" (Fu et al. 2020, arXiv 2009.08233; Jiang et al. 2020,
arXiv 2006.13726 trace it to imbalanced gradients), so the check a reviewer of an LS robustness claim asks
for first is a transfer attack from a **hard-label surrogate**: the same architecture trained with hard
labels on the same data, noise and seed (transfer_check.py finds it).

At every budget at which the evaluation ran white-box attacks, the surrogate's adversarial images are made
with each PGD setting scored there (the same options and seeds) and, where AutoAttack or one of its APGD
attacks was scored there, with APGD-CE (the ensemble's first, gradient-based attack) and classified by the
model. `transfer_err` (`transfer_eps2_err`, ...) is the share of the attacked images that the model gets
wrong on the surrogate's images (or already without attack, as every robust error here counts them), per
image over those transferred attacks. The check fails at a budget when that exceeds the strongest white-box
figure recorded at the budget (the per-image worst case over its attacks) by more than TRANSFER_SLACK:
a transferred attack, which knows nothing of the model's gradients, should not beat the attacks that use
them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustbench_ols.attacks.parameter_free import APGDCE, APGDDLR, APGDT, AutoAttackSpec
from robustbench_ols.attacks.robust import adversarial, batch_starts
from robustbench_ols.attacks.spec import PGD, AttackSpec

# One image in 100 (the checks' default sample) may go either way between two attacks without anything
# being wrong, as for the other checks (sanity.MONOTONE_SLACK, SQUARE_EXCESS_MAX).
TRANSFER_SLACK = 0.01
_APGD_KINDS = (AutoAttackSpec, APGDCE, APGDDLR, APGDT)


@dataclass(frozen=True)
class Transfer(AttackSpec):
    """Not an attack one asks for: the key and label of the transfer figure at one budget
    (`transfer_err`, `transfer_eps2_err`; "Transfer (2/255)")."""
    kind: ClassVar[str] = "transfer"

    @property
    def display(self) -> str:
        return "Transfer"


def transferred(scored) -> dict[float, list[AttackSpec]]:
    """Per budget eps > 0 of the white-box attacks `scored` (AttackSpecs), the attacks crafted on the
    surrogate: every PGD setting scored there, and APGD-CE at that eps where AutoAttack or an APGD attack
    was scored there."""
    out: dict[float, list[AttackSpec]] = {}
    for spec in scored:
        if spec.eps <= 0:
            continue
        if isinstance(spec, PGD):
            out.setdefault(spec.eps, []).append(spec)
        elif isinstance(spec, _APGD_KINDS) and APGDCE(eps=spec.eps) not in out.get(spec.eps, []):
            out.setdefault(spec.eps, []).append(APGDCE(eps=spec.eps))
    return out


def transfer_fooled(model, surrogate, images: torch.Tensor, labels: torch.Tensor, spec: AttackSpec, *,
                    seed: int = 0, batch_size: int = 256, channels_last: bool = False,
                    per_image_starts: bool = True) -> torch.Tensor:
    """Per uint8 image (bool, on the CPU): `model` wrong on the adversarial image `spec` crafts on
    `surrogate`; seeded as the white-box attacks (robust.attack_outcomes): batch b with seed + b, PGD's
    random starts one stream over the images."""
    fooled = []
    model.eval()
    starts = batch_starts(spec, seed, per_image_starts)
    for b, i in enumerate(range(0, len(images), batch_size)):
        x = images[i:i + batch_size].float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[i:i + batch_size]
        adv = adversarial(surrogate, x, y, spec, seed=seed + b, starts=starts(b))
        with torch.no_grad():
            fooled.append((model(adv).argmax(1) != y).cpu())
    return torch.cat(fooled) if fooled else torch.zeros(0, dtype=torch.bool)


def transfer_check(model, surrogate, images: torch.Tensor, labels: torch.Tensor, *, clean_wrong: torch.Tensor,
                   white_box: dict, seed: int = 0, batch_size: int = 256, channels_last: bool = False,
                   on_stage=None, per_image_starts: bool = True) -> tuple[dict, dict, dict]:
    """(figures, details, per-image outcomes) of the transfer check of `model` (eval mode) from `surrogate`
    on the attacked uint8 `images`. `clean_wrong`: the model's clean mistakes on them; `white_box`:
    AttackSpec -> fooled (bool per image) of every attack the evaluation ran on them."""
    stage = on_stage or (lambda text: None)
    surrogate.eval()
    figures, details, outcomes = {}, {}, {}
    for eps, specs in sorted(transferred(list(white_box)).items(), reverse=True):
        fooled = clean_wrong.clone()
        for spec in specs:
            stage(f"transfer check: {spec.label} from the surrogate")
            f = transfer_fooled(model, surrogate, images, labels, spec, seed=seed, batch_size=batch_size,
                                channels_last=channels_last, per_image_starts=per_image_starts) | clean_wrong
            figures[f"transfer_{spec.key}"] = f.double().mean().item()
            outcomes[spec.key[:-len("_err")]] = f.numpy()
            fooled |= f
        strongest = clean_wrong.clone()
        for spec, f in white_box.items():
            if abs(spec.eps - eps) < 1e-12:
                strongest |= f
        err, white = fooled.double().mean().item(), strongest.double().mean().item()
        key = Transfer(eps=eps).key
        figures[key] = err
        details[f"{eps * 255:g}/255"] = {"transfer_err": err, "white_box_err": white, "excess": err - white,
                                         "passed": err - white <= TRANSFER_SLACK,
                                         "attacks": [s.text for s in specs]}
    failed = [budget for budget, d in details.items() if not d["passed"]]
    figures.update(transfer_flagged=bool(failed), transfer_failed_budgets=",".join(failed))
    return figures, {"threshold": TRANSFER_SLACK, "budgets": details}, outcomes
