"""Measurement, read at log time and never per step: step timing, memory peaks, whole-run aggregates, lost
updates, NVML telemetry, idle power (read before training), GPU FLOP peaks, the all-reduce meter, the profiled
window and its operation classes, and the host CPU's model and flags."""
