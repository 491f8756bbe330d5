"""`python -m train.nodecheck`: see train/nodecheck/cli.py."""

import sys

from train.nodecheck.cli import main

sys.exit(main())
