"""Benchmark scripts: each writes benchmarks/results/*.json (run as `python -m benchmarks.<name>` or `python benchmarks/<name>.py`)."""
