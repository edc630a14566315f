"""Method registry, plugins and the `name:opt=val,...` option syntax.

A method is named three ways:
- a built-in registry name: `ols`, `ols:alpha=0.5,init=zeros`;
- a plugin class by import path: `mypkg.smoothing:MyMethod`, `mypkg.smoothing:MyMethod:eps=0.2`;
- a plugin registered by its package under the entry-point group `robustbench_ols.methods`
  (`[project.entry-points."robustbench_ols.methods"] mysmooth = "mypkg.smoothing:MyMethod"`).
Plugins are checked against the contract when loaded (ContractError names the method and the rule).
"""
from __future__ import annotations

import functools
import inspect
import types
import typing

from robustbench_ols.common.errors import ContractError, SpecError
from robustbench_ols.common.registry import Registry
from robustbench_ols.common.values import parse_bool
from robustbench_ols.methods.base import Method

ENTRY_POINT_GROUP = "robustbench_ols.methods"
# Each hook and the positional parameters it is called with (besides self).
HOOKS = {"setup": ("info",), "on_epoch_start": ("epoch", "models"),
         "training_step": ("models", "batch", "epoch"), "loss": ("logits", "batch", "epoch"),
         "after_backward": ("batch", "out"), "state_dict": (), "load_state_dict": ("state",),
         "effective_options": (), "clean_meta_size": ()}


def register(cls):
    """Class decorator: make a `Method` subclass available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no `name`")
    return METHODS.register(cls.name, cls)


def list_methods() -> list[str]:
    """Built-in names (plugins by entry point: `plugin_names()`)."""
    return METHODS.names()


def plugin_names() -> list[str]:
    return METHODS.plugin_names()


def parse_method(text: str) -> tuple[str, dict]:
    """`ols:alpha=0.5,init=zeros` -> ("ols", {"alpha": "0.5", "init": "zeros"}) (values still text);
    `pkg.mod:Cls:a=1` -> ("pkg.mod:Cls", {"a": "1"})."""
    parts = text.strip().split(":")
    # module:Class[:options], unless the first part is a method name (`ols:alpha` is a typo, not a path)
    if len(parts) >= 2 and parts[1].isidentifier() and parts[0] not in METHODS:
        name, rest = f"{parts[0]}:{parts[1]}", ":".join(parts[2:])
    else:
        name, rest = parts[0], ":".join(parts[1:])
    opts = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SpecError(f"--method {text!r}: options are written name:key=value,key=value; "
                            f"got {item!r}")
        opts[key.strip()] = value.strip()
    return name, opts


def method_class(name: str) -> type:
    """The class for a built-in name, an entry-point plugin name or a `module:Class` path."""
    return METHODS.get(name)


def check_contract(cls, label: str) -> None:
    """Static checks of a method class; ContractError names the method and the broken rule."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ContractError(f"method {label!r}: {cls!r} is not a class derived from "
                            "robustbench_ols.methods.Method (rule: a method subclasses Method)")
    for hook, params in HOOKS.items():
        fn = getattr(cls, hook)
        if fn is getattr(Method, hook):
            continue
        try:
            inspect.signature(fn).bind(None, *params)
        except TypeError:
            raise ContractError(
                f"method {label!r}: hook {hook}{inspect.signature(fn)} cannot be called as "
                f"{hook}(self, {', '.join(params)}) (rule: hooks take the parameters of Method.{hook})") from None
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if cls.__init__ is object.__init__:
        params = []  # no options
    bad = [p.name for p in params if p.kind is not p.KEYWORD_ONLY or p.default is p.empty]
    if bad:
        raise ContractError(f"method {label!r}: __init__ parameters {', '.join(bad)} are not keyword-only "
                            "with a default (rule: options are `def __init__(self, *, name: type = default)`)")
    if not (isinstance(cls.num_models, int) and cls.num_models >= 1):
        raise ContractError(f"method {label!r}: num_models must be an int >= 1, got {cls.num_models!r}")


def option_defaults(cls) -> dict:
    """Keyword options of `cls.__init__` with their defaults."""
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name != "self"}


def resolve_options(name: str, options: dict | None = None) -> tuple[type, dict]:
    """(the method class, its options with the defaults filled in); text values are converted by
    their annotation. Unknown options and unconvertible values are a SpecError."""
    cls = method_class(name)
    defaults = option_defaults(cls)
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()) or "none"
        raise SpecError(f"unknown option(s) {', '.join(unknown)} for method {name!r}; valid: {valid}")
    hints = typing.get_type_hints(cls.__init__)
    return cls, {**defaults, **{k: _convert(name, k, v, hints.get(k)) for k, v in options.items()}}


def build_method(name: str, options: dict | None = None):
    """Instantiate a method (its __init__ may reject values). Returns (method, resolved options)."""
    given = dict(options or {})
    cls, options = resolve_options(name, options)
    try:
        method = cls(**options)
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a plugin's __init__ raises on a bad value is bad input
        named = ", ".join(f"{k}={options[k]!r}" for k in given if k in options) or "its defaults"
        raise SpecError(f"method {name!r} rejected its options ({named}): {type(e).__name__}: {e}. Fix the value "
                        "(a method's __init__ may raise robustbench_ols.SpecError naming the option, as the "
                        "built-in ones do)") from e
    method.bind(name, options)
    return method, method.options()


@functools.lru_cache(maxsize=None)
def default_options(name: str) -> dict:
    """The options `name` alone resolves to. A method's options() may resolve a default itself (LS's eps
    None -> 0.1), so they are read from an instance, not from __init__'s signature; {} when the method
    cannot be loaded here (a plugin that is not importable)."""
    try:
        return build_method(name, {})[1]
    except Exception:  # noqa: BLE001 - whatever a plugin raises
        return {}


def method_label(name: str, options: dict) -> str:
    """`ols` for OLS with its defaults; `ls:eps=0.2` when an option differs from the default. Runs
    record it in spec.json (method.label); this rebuilds it for records made before they did."""
    defaults = default_options(name)
    changed = {k: v for k, v in sorted(options.items()) if k not in defaults or defaults[k] != v}
    return name if not changed else name + ":" + ",".join(f"{k}={v}" for k, v in changed.items())


def label_of(text: str) -> str:
    """The label runs of the method text `text` (e.g. `ols:alpha=0.5`) are recorded under."""
    name, raw = parse_method(text)
    return method_label(name, build_method(name, raw)[1])


def _convert(method: str, key: str, value, hint):
    if not isinstance(value, str):
        return value
    types_ = [t for t in _flatten(hint) if t is not type(None)] or [str]
    if value.lower() in ("none", "null") and type(None) in _flatten(hint):
        return None
    for t in types_:
        try:
            return parse_bool(value) if t is bool else t(value)
        except (TypeError, ValueError):
            continue
    names = " or ".join(getattr(t, "__name__", str(t)) for t in types_)
    raise SpecError(f"method {method!r}: option {key}={value!r} is not a valid {names}")


def _flatten(hint):
    if hint is None:
        return []
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return list(typing.get_args(hint))
    return [hint]


METHODS = Registry("method", group=ENTRY_POINT_GROUP, paths=True, check=check_contract)
