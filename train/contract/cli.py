"""The argument parser every command of the suite uses: errors in one line."""

from __future__ import annotations

import argparse
import sys

from train.contract.errors import EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)
