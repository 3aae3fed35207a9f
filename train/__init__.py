"""Training, evaluation and recommendation entry points (`python -m train.<name> --help`)."""
