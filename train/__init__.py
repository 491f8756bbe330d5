"""The training runner of the precision × depth × GPU-count suite (entry point: train/run.py)."""
