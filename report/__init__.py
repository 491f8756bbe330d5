"""The study's report: runs (W&B project or offline folder) -> results.md/.csv, plots, report.html, W&B Report.
Of train/ it imports only the torch-free contract (train/contract/), never the runner, numerics, measurement or
launching code."""
