"""Where a grid's cells run: a `Backend` per place (this machine, a Ray cluster, a Slurm job array), registered by
name in `BACKENDS` like the methods, models, datasets and attacks, so that a new one is one file:

    from robustbench_ols.executors.backends import Backend, register

    @register("mine")
    class Mine(Backend):
        help = "my cluster"
        def run(self, cells, out, ev, ex, *, retry_failed, progress): ...  # returns cells.Summary

`rbols matrix --backend NAME` takes a registered name, an entry point of the group `robustbench_ols.backends`, or
an import path `package.module:Class`. Its command-line options (`add_arguments`), their parsing (`from_args`)
and its part of `--dry-run` (`preview`) come from the class, so the command line names no backend itself.
Importing a backend's module must stay light (no torch): `rbols --help` lists every backend's options.
"""
from __future__ import annotations

from typing import ClassVar

from robustbench_ols.common.errors import ContractError, SpecError
from robustbench_ols.common.registry import Registry


class Backend:
    """One way of running a grid's cells. Every backend shares the grid's folder through the cells' claims
    (store/claims.py) and runs each cell with `cells.run_cell`, so that all give the same records."""
    name: ClassVar[str] = ""  # set by the registry (the name it is registered or asked by)
    help: ClassVar[str] = ""  # one line for `rbols matrix --help`

    @classmethod
    def add_arguments(cls, group) -> None:
        """Add this backend's options to `group` (an argparse group), each named `--<name>-...` (or, for the
        local backend, plain); their values reach `from_args`."""

    @classmethod
    def from_args(cls, args) -> "Backend":
        """The backend configured from the parsed command line (each value checked here, once)."""
        return cls()

    def run(self, cells, out, ev, ex, *, retry_failed: bool, progress: bool):
        """Run the cells left to train (`cells.to_take`) until each is done or failed; a `cells.Summary`."""
        raise NotImplementedError

    def parallel(self, pending: int) -> int:
        """How many of `pending` cells run at once, for the cost estimate (default 1)."""
        return 1

    def preview(self, cells, out, ev, *, retry_failed: bool) -> str:
        """What `--dry-run` adds for this backend (e.g. the sbatch file); '' for nothing."""
        return ""


def check_backend(obj, name: str) -> None:
    """The contract every backend meets, built-in or plugin: a Backend subclass that overrides `run`."""
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise ContractError(f"backend {name!r}: {obj!r} is not a subclass of "
                            "robustbench_ols.executors.backends.Backend")
    if obj.run is Backend.run:
        raise ContractError(f"backend {name!r}: {obj.__name__} does not define run(cells, out, ev, ex, *, "
                            "retry_failed, progress)")
    if "name" not in vars(obj) or not obj.name:
        obj.name = name


BACKENDS = Registry("backend", group="robustbench_ols.backends", paths=True, check=check_backend, error=SpecError)


def register(name: str):
    """`@register("mine")` on a Backend subclass: checked, named and registered."""
    def add(cls):
        check_backend(cls, name)
        return BACKENDS.register(name, cls)
    return add
