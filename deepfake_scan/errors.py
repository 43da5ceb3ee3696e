"""Errors that stop a command. Bad *inputs* never raise: they become verdict rows with an error."""


class ScanError(Exception):
    """A command cannot run (missing source, unwritable output, unreadable model, ...).

    The message is one line a user can act on; the CLI prints it and exits non-zero.
    """


class ModelError(ScanError):
    """A model artifact is missing, corrupt, or does not match its description."""


def first_line(e: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
