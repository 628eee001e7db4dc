"""Errors a user can fix; the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input: names the file/key and what was expected (one line)."""
