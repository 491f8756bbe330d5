"""`python -m train.sweep`: see train/sweep/cli.py."""

import sys

from train.sweep.cli import main

sys.exit(main())
