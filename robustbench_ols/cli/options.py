"""The command line's options and their defaults, derived from the spec dataclasses (one source of truth):
`rbols run` offers every RunSpec, EvalSpec and ExecOptions field, `rbols matrix` the same minus the grid's axes."""
from __future__ import annotations

import dataclasses

from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


# The RunSpec fields `rbols matrix` takes from the grid's axes: not training options.
GRID_AXES = ("dataset", "model", "method", "method_options", "noise", "noise_seed", "seed")
RUN = _defaults(RunSpec)
RUN_DEFAULTS = {k: v for k, v in RUN.items() if k not in GRID_AXES}
EVAL_DEFAULTS = _defaults(EvalSpec)
EXEC_DEFAULTS = _defaults(ExecOptions)
EVAL_FLAGS = {"attacks": "attack", "n_bins": "bins"}  # EvalSpec field -> option, where they differ
