"""One registry style for every kind of named thing a spec refers to: methods, models, datasets, attacks.

    MODELS = Registry("model")
    @MODELS.register("resnet20")
    def resnet20(num_classes): ...
    MODELS.get("resnet20")          # SpecError listing the valid names when unknown

A registry with an entry-point `group` also finds plugins that other packages declare under that group
(`[project.entry-points."robustbench_ols.methods"] mysmooth = "mypkg.smoothing:MyMethod"`), and, with
`paths=True`, any object named by its import path `package.module:Name`. A `check` callable vets every
plugin when it is loaded (the method contract); loaded plugins are remembered under the name they were
asked by, apart from the built-ins.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable

from robustbench_ols.common.errors import SpecError


class Registry:
    def __init__(self, kind: str, *, group: str | None = None, paths: bool = False,
                 check: Callable[[object, str], None] | None = None, error: type = SpecError):
        self.kind, self.group, self.paths, self.check, self.error = kind, group, paths, check, error
        self._builtin: dict[str, object] = {}
        self._loaded: dict[str, object] = {}

    def register(self, name: str, entry=None):
        """`register(name, entry)`, or `@register(name)` as a decorator; a second, different entry under
        one name is an error (it would make specs ambiguous)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(obj):
            if self._builtin.get(name, obj) is not obj:
                raise ValueError(f"{self.kind} name {name!r} is already registered by {self._builtin[name]}")
            self._builtin[name] = obj
            return obj
        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Forget a registered name (a test's or a session's temporary entry)."""
        self._builtin.pop(name, None)
        self._loaded.pop(name, None)

    def known(self) -> set[str]:
        """Every name that resolves now without a lookup: the registered ones and the plugins loaded."""
        return set(self._builtin) | set(self._loaded)

    def names(self) -> list[str]:
        """The registered names, sorted (plugins found by entry point: `plugin_names()`)."""
        return sorted(self._builtin)

    def plugin_names(self) -> list[str]:
        return sorted(ep.name for ep in entry_points(group=self.group)) if self.group else []

    def __contains__(self, name: str) -> bool:
        return name in self._builtin

    def __iter__(self):
        return iter(self.names())

    def get(self, name: str):
        """The entry of a registered name, a plugin's entry point or (`paths`) a `module:Name` path."""
        if name in self._builtin:
            return self._builtin[name]
        if name in self._loaded:
            return self._loaded[name]
        if self.paths and ":" in name:
            obj = self._import(name)
        else:
            found = [ep for ep in entry_points(group=self.group)] if self.group else []
            found = [ep for ep in found if ep.name == name]
            if not found:
                raise self.error(self.unknown(name))
            try:
                obj = found[0].load()
            except Exception as e:  # noqa: BLE001 - whatever the plugin's import raises
                raise SpecError(f"{self.kind} {name!r}: loading entry point {found[0].value!r} failed: "
                                f"{type(e).__name__}: {e}") from None
        if self.check is not None:
            self.check(obj, name)
        self._loaded[name] = obj
        return obj

    def unknown(self, name: str) -> str:
        """The message for a name that is not registered: every valid name, and the plugins."""
        plugins = self.plugin_names()
        extra = f"; plugins: {', '.join(plugins)}" if plugins else ""
        path = "; or a plugin class as module.path:ClassName" if self.paths else ""
        return f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}{extra}{path}"

    def _import(self, path: str):
        module, _, attr = path.partition(":")
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            raise SpecError(f"{self.kind} {path!r}: cannot import module {module!r} ({type(e).__name__}: {e}); "
                            "install the package or put its folder on PYTHONPATH") from None
        if not hasattr(mod, attr):
            raise SpecError(f"{self.kind} {path!r}: module {module!r} has no attribute {attr!r}")
        return getattr(mod, attr)
