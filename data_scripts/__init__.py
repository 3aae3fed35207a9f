"""Raw recommendation data (MovieLens, Amazon Reviews 2023, your own events) -> GeniusRec processed-dataset folders."""

import os as _os
import sys as _sys

# Progress bars in a log file: when stderr is not a terminal, tqdm redraws a bar at most once a minute (plus its final
# state) instead of ten times a second, so `make quickstart > log` holds a few lines per stage, not thousands of
# frames. tqdm reads TQDM_* defaults when it is imported, so this runs before anything imports it; an explicit
# TQDM_MININTERVAL wins.
_quiet_bars_in_log_files = not getattr(_sys.stderr, "isatty", lambda: False)() and "TQDM_MININTERVAL" not in _os.environ
if _quiet_bars_in_log_files:
    _os.environ["TQDM_MININTERVAL"] = "60"
