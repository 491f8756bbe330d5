"""Torch-free facts both sides share (train/ writes by them, report/ and tests/ read by them; neither imports the
other): metric keys, experiment identity, files, the W&B offline reader, one-line errors and the one-line parser.
Importing any of it loads no torch, numpy, wandb or matplotlib (tests/unit/test_contract.py checks)."""
