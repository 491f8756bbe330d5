"""The runner's exit statuses, and the one error type it turns into a single line and exit status 2."""

EXIT_DIVERGED = 3  # the training loss or weights became non-finite: a result, recorded; not to be retried
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM/SIGUSR1; run the same command to continue


class UsageError(Exception):
    """Bad input from the user (flags, data files, checkpoints, environment).

    Raised anywhere in train/; run.py prints it as one line, without a traceback, and exits 2.
    """
