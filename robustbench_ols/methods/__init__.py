"""Training methods behind one contract (see base.py); registered by name."""
from .base import FitInfo, Method, StepOutput, soft_cross_entropy
from .registry import (METHODS, build_method, check_contract, list_methods, method_class, option_defaults,
                       parse_method, plugin_names, register)
from . import arazo, coteaching, losses, mwnet, ols, pencil  # noqa: F401  (registers the built-in methods)

__all__ = ["FitInfo", "Method", "StepOutput", "soft_cross_entropy", "METHODS", "build_method",
           "list_methods", "method_class", "option_defaults", "parse_method", "register", "plugin_names",
           "check_contract"]
