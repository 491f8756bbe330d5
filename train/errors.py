"""The one error type the runner turns into a single line and exit status 2."""


class UsageError(Exception):
    """Bad input from the user (flags, data files, checkpoints, environment).

    Raised anywhere in train/; run.py prints it as one line, without a traceback, and exits 2.
    """
