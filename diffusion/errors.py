"""Errors with a meaning for the command line: a user mistake (exit 2) or a failed run (exit 3)."""


class UsageError(ValueError):
    """Bad input from the user: a wrong path, value or config key. The CLI prints one line and exits 2."""


class RunError(RuntimeError):
    """A run that could not finish, e.g. a loss that became NaN. The CLI prints one line and exits 3."""
