"""The study's report: runs (W&B project or offline folder) -> results.md/.csv, plots, report.html, W&B Report.
Reads only the metric contract (docs/metric-contract.md): of train/ it imports only the torch-free
train/contract/, never the runner, numerics, measurement or launching code."""
