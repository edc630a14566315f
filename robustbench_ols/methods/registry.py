"""Method registry and the `name:opt=val,...` option syntax."""
from __future__ import annotations

import inspect
import types
import typing

from ..errors import SpecError

METHODS: dict[str, type] = {}


def register(cls):
    """Class decorator: make a `Method` subclass available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no `name`")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by {METHODS[cls.name]}")
    METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(METHODS)


def parse_method(text: str) -> tuple[str, dict]:
    """`ols:alpha=0.5,init=zeros` -> ("ols", {"alpha": "0.5", "init": "zeros"}) (values still text)."""
    name, _, rest = text.strip().partition(":")
    opts = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SpecError(f"--method {text!r}: options are written name:key=value,key=value; "
                            f"got {item!r}")
        opts[key.strip()] = value.strip()
    return name, opts


def method_class(name: str) -> type:
    if name not in METHODS:
        raise SpecError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}")
    return METHODS[name]


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
