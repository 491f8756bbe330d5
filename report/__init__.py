"""The study's report: runs (W&B project or offline folder) -> results.md/.csv, plots, report.html, W&B Report.
Reads only the metric contract (docs/metric-contract.md); never imports train/."""
