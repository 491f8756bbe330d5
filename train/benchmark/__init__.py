"""`python -m train.benchmark`: points run side by side in turns (turns.py), and the bare loop (bare.py) that
measures the runner's overhead."""
