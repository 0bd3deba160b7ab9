"""The one exception type of the kit: messages name the file and the problem."""


class DeidError(Exception):
    """A user-facing error (bad input, missing file or weights). The CLI prints it without a traceback."""
