"""The one exception type for a user's mistake (bad input, bad config, missing file).

Jobs turn it into one line on stderr and a non-zero exit, without a stack trace; every
other exception is a bug and keeps its trace.
"""


class UserError(Exception):
    """Something the person running the job can fix; the message says what and how."""


class CheckFailed(Exception):
    """An output failed a correctness check (a bug, not a user's mistake): one line, exit 1."""
