"""`python -m train.benchmark`: see train/benchmark/cli.py."""

import sys

from train.benchmark.cli import main

sys.exit(main())
