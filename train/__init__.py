"""Training, evaluation and recommendation entry points (`geniusrec <job> --help`, or `python -m train.<name> --help`
in a checkout)."""

from data_scripts import _quiet_bars_in_log_files  # noqa: F401  (progress bars in a log file: see data_scripts)
