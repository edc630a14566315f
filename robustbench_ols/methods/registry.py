"""Method registry, plugins and the `name:opt=val,...` option syntax.

A method is named three ways:
- a built-in registry name: `ols`, `ols:alpha=0.5,init=zeros`;
- a plugin class by import path: `mypkg.smoothing:MyMethod`, `mypkg.smoothing:MyMethod:eps=0.2`;
- a plugin registered by its package under the entry-point group `robustbench_ols.methods`
  (`[project.entry-points."robustbench_ols.methods"] mysmooth = "mypkg.smoothing:MyMethod"`).
Plugins are checked against the contract when loaded (ContractError names the method and the rule).
"""
from __future__ import annotations

import importlib
import inspect
import types
import typing

from ..errors import ContractError, SpecError

METHODS: dict[str, type] = {}
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
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {METHODS[cls.name]}")
    METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    """Built-in names (plugins by entry point: `plugin_names()`)."""
    return sorted(k for k in METHODS if ":" not in k)


def plugin_names() -> list[str]:
    from importlib.metadata import entry_points
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


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
    if name in METHODS:
        return METHODS[name]
    if ":" in name:
        cls = _import_class(name)
    else:
        from importlib.metadata import entry_points
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            plugins = plugin_names()
            extra = f"; plugins: {', '.join(plugins)}" if plugins else ""
            raise SpecError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}{extra}; "
                            "or a plugin class as module.path:ClassName")
        try:
            cls = found[0].load()
        except Exception as e:  # noqa: BLE001 - whatever the plugin's import raises
            raise SpecError(f"method {name!r}: loading entry point {found[0].value!r} failed: "
                            f"{type(e).__name__}: {e}") from None
    check_contract(cls, name)
    METHODS[name] = cls  # cached under the name it was asked by
    return cls


def _import_class(path: str) -> type:
    module, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001
        raise SpecError(f"method {path!r}: cannot import module {module!r} ({type(e).__name__}: {e}); "
                        "install the package or put its folder on PYTHONPATH") from None
    if not hasattr(mod, attr):
        raise SpecError(f"method {path!r}: module {module!r} has no attribute {attr!r}")
    return getattr(mod, attr)


def check_contract(cls, label: str) -> None:
    """Static checks of a method class; ContractError names the method and the broken rule."""
    from .base import Method
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


def build_method(name: str, options: dict | None = None):
    """Instantiate a registered method; text option values are converted by their annotation.
    Returns (method, resolved options with defaults)."""
    cls = method_class(name)
    defaults = option_defaults(cls)
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()) or "none"
        raise SpecError(f"unknown option(s) {', '.join(unknown)} for method {name!r}; valid: {valid}")
    hints = typing.get_type_hints(cls.__init__)
    kwargs = {k: _convert(name, k, v, hints.get(k)) for k, v in options.items()}
    method = cls(**kwargs)
    method._options = {**defaults, **kwargs}
    method._label = name
    return method, method.options()


def _convert(method: str, key: str, value, hint):
    if not isinstance(value, str):
        return value
    types_ = [t for t in _flatten(hint) if t is not type(None)] or [str]
    if value.lower() in ("none", "null") and type(None) in _flatten(hint):
        return None
    for t in types_:
        try:
            if t is bool:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return t(value)
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
