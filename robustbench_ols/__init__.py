"""robustbench_ols: does a label-smoothing method make a CIFAR classifier more robust and better
calibrated? Hard labels, label smoothing and Online Label Smoothing under injected label noise.

Public API: `RunSpec`, `ExecOptions`, `execute` (one run), `load_dataset`, `make_noisy_labels`,
`create_model`, `list_models`, `build_method`, `list_methods`, `Method`, `register`, `SpecError` (what a
method's `__init__` raises on a bad option value: exit 2 with its message).
"""
__version__ = "0.1.0"

from robustbench_ols.common.errors import SpecError  # noqa: E402
from robustbench_ols.spec import ExecOptions, RunSpec  # noqa: E402


def __getattr__(name):
    # Lazy: `import robustbench_ols` stays cheap; torch is imported on first use of these.
    from importlib import import_module
    where = {"execute": "train.run", "load_dataset": "data", "make_noisy_labels": "data.noise",
             "create_model": "models", "list_models": "models", "build_method": "methods",
             "list_methods": "methods", "Method": "methods", "register": "methods"}
    if name in where:
        return getattr(import_module(f".{where[name]}", __name__), name)
    raise AttributeError(f"module 'robustbench_ols' has no attribute {name!r}")


def __dir__():
    # help(robustbench_ols) and dir() list the public API (pydoc reads it through __getattr__, importing torch then)
    return sorted(set(globals()) | set(__all__))


__all__ = ["ExecOptions", "RunSpec", "SpecError", "__version__", "execute", "load_dataset", "make_noisy_labels",
           "create_model", "list_models", "build_method", "list_methods", "Method", "register"]
