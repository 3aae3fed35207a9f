"""Evaluation: ranking metrics (`ranking`), session metrics (`session_metrics`), session generation and its table
(`sessions`), baselines (`baselines`), results files (`results`), model cards and plots (`reporting`).

May import the model package and the data contract (`data_scripts`); never the training entry points.
"""
