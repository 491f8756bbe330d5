"""Launching several processes: the elastic launcher (torchrun's machinery), the process group a worker joins,
and stop signals."""
