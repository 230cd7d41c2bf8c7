"""One error type: the CLI prints it as one line and exits non-zero, never a traceback."""


class HalabError(Exception):
    """A failure the user can act on: says the step, the node and where the log is."""
