"""Training methods behind one contract (see base.py); registered by name."""
# importing the modules registers the built-in methods
from robustbench_ols.methods import arazo, coteaching, elr, gls, losses, mwnet, ols, pencil  # noqa: F401
from robustbench_ols.methods.base import FitInfo, Method, StepOutput, soft_cross_entropy
from robustbench_ols.methods.registry import (
    METHODS,
    build_method,
    check_contract,
    label_of,
    list_methods,
    method_class,
    method_label,
    option_defaults,
    parse_method,
    plugin_names,
    register,
    resolve_options,
)

__all__ = ["FitInfo", "Method", "StepOutput", "soft_cross_entropy", "METHODS", "build_method",
           "list_methods", "method_class", "option_defaults", "parse_method", "register", "plugin_names",
           "check_contract", "label_of", "method_label", "resolve_options"]
