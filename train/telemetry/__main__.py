"""`python -m train.telemetry`: see train/telemetry/probe.py."""

import sys

from train.telemetry.probe import main

sys.exit(main())
