"""User-facing errors.

Anything a user can cause (a missing file, a broken annotation, a config typo, a checkpoint of
another model) raises :class:`RefineMaskError` with a message that says what went wrong, where,
and what to do. The command line prints that message on one line and exits with status 2,
without a traceback.
"""


class RefineMaskError(Exception):
    """An error caused by the user's input, reported as one line by the CLI."""
