"""Ids (plain Python, no import of ours): a run_id or eval_id is 12 hex digits of the SHA-256 of a spec's
canonical JSON, and every id already recorded stays valid as specs grow, by one rule:

    A field (or a method's option) added to a spec, at the value that reproduces what was recorded before it
    existed, is left out of the id, with the fields that mean something only when it is on.

The tables below give each such field's value (`LATER_RUN_FIELDS` for RunSpec, `LATER_EVAL_FIELDS` for EvalSpec)
and its dependents (`DEPENDENTS`); a method declares its own options' in `Method.LATER_OPTIONS`. Removing an entry or
changing its value changes ids: tests/spec/test_identity.py pins ids of every kind and checks the rule itself.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping

# field: the value that reproduces the records made before it existed
LATER_RUN_FIELDS = {"val_split": 0, "val_labels": "noisy", "test_every": 1, "test_subset": 0, "noisy_val": 0.0}
LATER_EVAL_FIELDS = {"attack_amp": False, "select": "last", "checks": False, "attack_starts": "per-batch",
                     "shift": "none"}
OLD_ATTACK_BATCH = 256  # EvalSpec.attack_batch_size's default
# the fields that mean something only when a later field is on: left out with it
DEPENDENTS = {"checks": ("check_examples", "eps_sweep"), "shift": ("corruptions", "severities", "shift_examples")}


def without_later(d: Mapping, later: Mapping, dependents: Mapping = DEPENDENTS) -> dict:
    """`d` without each field of `later` that is at its old value there, nor that field's `dependents`."""
    drop = set()
    for field, old in later.items():
        if field in d and d[field] == old:
            drop |= {field, *dependents.get(field, ())}
    return {k: v for k, v in d.items() if k not in drop}


def attack_batch_identity(d: Mapping, *, attacked: int, per_batch: bool) -> dict:
    """An EvalSpec's dict (to_dict) with its attack batch size only as far as it changes the numbers.
    `attacked`: the attacked images (0: the whole test set, more than any batch); `per_batch`: whether an attack
    (or the gradient-masking checks' Square) is seeded per batch. Per-batch PGD starts (the old rule, no
    `attack_starts` in `d`): as recorded. Per-image starts draw exactly the old starts wherever every attacked
    set fits in one batch: then the old form at the old default batch size, so those records keep their ids;
    otherwise `attack_starts` stays, with the batch size only for per-batch draws, as far as it splits images."""
    if "attack_starts" not in d:
        return dict(d)
    d = dict(d)
    batch = d.pop("attack_batch_size")
    if not d.get("attacks") or 0 < attacked <= OLD_ATTACK_BATCH and (attacked <= batch or not per_batch):
        d.pop("attack_starts")
        return {**d, "attack_batch_size": OLD_ATTACK_BATCH}
    if per_batch:
        d["attack_batch_size"] = min(batch, attacked) if attacked else batch
    return d


def content_id(d: Mapping) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of `d` (keys sorted, no spaces)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
