"""Errors that stop a command. Bad *inputs* never raise: they become verdict rows with an error."""


class ScanError(Exception):
    """A command cannot run (missing source, unwritable output, unreadable model, ...).

    The message is one line a user can act on; the CLI prints it and exits non-zero.
    """


class ModelError(ScanError):
    """A model artifact is missing, corrupt, or does not match its description."""
