"""Measurement, read at log time and never per step: step timing, memory peaks, whole-run aggregates, lost
updates, NVML telemetry, idle power (read before training), GPU FLOP peaks and the all-reduce meter."""
