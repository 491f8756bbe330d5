"""`python -m train.sweep`: W&B grid sweeps without a W&B server, here or as Slurm job arrays."""
