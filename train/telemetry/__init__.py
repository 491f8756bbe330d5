"""`python -m train.telemetry`: what NVML gives on this node, live."""
