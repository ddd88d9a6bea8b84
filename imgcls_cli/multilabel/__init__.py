"""Multi-label classification: metrics and thresholds (metrics.py), losses (losses.py), figures (plots.py) and the
files of an evaluation (report.py). Nothing is imported here, so `metrics` loads without torch."""
