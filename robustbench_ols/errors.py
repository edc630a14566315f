"""Errors a user can fix. The CLI prints their message (no traceback) and exits with status 2."""


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
