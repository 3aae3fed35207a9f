"""Benchmark scripts, a package: run each from the repository root as `python -m benchmarks.<name> --help`.

Each writes `benchmarks/results/*.json` with the provenance block of `train.evaluation.results.provenance`
(command, machine, date, commit). They import the library's public helpers only.
"""
