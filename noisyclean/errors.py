"""The package's one exception type: the CLI turns it into a one-line error."""


class NoisyCleanError(Exception):
    """A user-facing error whose message is one line naming the row, column or file."""
