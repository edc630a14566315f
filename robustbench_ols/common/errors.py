"""Errors a user can fix. The CLI prints their message (no traceback) and exits with status 2 (1 for
RunFailed, 130 for Interrupted)."""


class RbolsError(Exception):
    """Base class: the message names the problem and the fix."""


class SpecError(RbolsError, ValueError):
    """A bad option, name or value in a run specification."""


class DataError(RbolsError):
    """Missing, unreadable or corrupt data files."""


class RunFailed(RbolsError):
    """A run stopped (for instance on a non-finite loss); its directory records why."""


class ContractError(RbolsError):
    """A method (usually a plugin) breaks the method contract; the message names the method and rule."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run, after its directory was recorded: status.json says `interrupted`
    and where. A KeyboardInterrupt, so that nothing that catches Exception (a grid's cell) swallows it."""
