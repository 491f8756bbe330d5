"""The runner's exit statuses, the error types it turns into a single line (exit status 2 for bad input, 1 for a
run that failed for another reason it can name), and how any error becomes that one line."""

EXIT_USAGE = 2  # bad input, refused before anything was written (argparse's own status for a bad flag)
EXIT_DIVERGED = 3  # the training loss or weights became non-finite: a result, recorded; not to be retried
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM/SIGUSR1; run the same command to continue


class RunFailed(Exception):
    """The run cannot go on for a reason outside its flags and files, named with what to do (a C++ toolchain that
    fails under --compile). run.py prints it as one line, without a traceback, and exits 1: not 2, which says the
    input was refused before anything was written, while this happens in the claimed run folder."""


class UsageError(Exception):
    """Bad input from the user (flags, data files, checkpoints, environment).

    Raised anywhere in train/; run.py prints it as one line, without a traceback, and exits 2.
    """


def first_line(error: BaseException | str, empty: str | None = None) -> str:
    """The first line of an error's message (or of a text), for a one-line report: tracebacks and C++ context
    below it are for logs. With no message: `empty`, else the exception's type name."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    if empty is not None or isinstance(error, str):
        return empty or ""
    return type(error).__name__
