"""Results files and their provenance: atomic JSON writes, the machine, the date and the code's commit.

Every benchmark and training entry point writes its `results.json` through [`write_json_atomic`], with
[`machine_description`], [`today`] and [`git_commit`] beside the numbers.
"""

import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile

import torch

from data_scripts.preprocessing import pid_alive


def machine_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temp path beside `path` (`.<name>.<pid>.<random>.tmp`) to write; on success it is renamed onto `path`,
    so `path` holds the old file or the new one, never half of one. The temp file is removed when writing fails (disk
    full, a value the format cannot hold, Ctrl-C); the temp files of killed writers (their pid gone) are removed by
    the next write to the same path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    remove_stale_temp_files(folder, name)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, payload: dict) -> None:
    """Writes JSON to a temp file beside `path`, then renames it into place ([`atomic_path`])."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=2)


def remove_stale_temp_files(folder: str, name: str) -> None:
    """Removes `.<name>.<pid>.*.tmp` files in `folder` whose writer process no longer exists."""
    prefix = f".{name}."
    for entry in os.listdir(folder):
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                os.remove(os.path.join(folder, entry))
            except OSError:
                pass


def provenance(command: str, argv=None) -> dict:
    """What every results file carries beside its numbers: `{"command", "machine", "date", "commit"}`, the command being
    `command` (e.g. "python -m train.evaluate") followed by `argv` (default: this process's arguments)."""
    args = sys.argv[1:] if argv is None else argv
    return {"command": " ".join([command, *args]), "machine": machine_description(), "date": today(), "commit": git_commit()}


def today() -> str:
    return datetime.date.today().isoformat()


def git_commit() -> str:
    """The code's git commit (`+dirty` when tracked files differ from it), or "unknown" outside a checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


TABLE_KEYS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr")


def format_table(rows: dict, keys=None, name_width: int = 24) -> str:
    """A small aligned table: `rows` maps a row name to a metrics dict; `keys` picks the columns (default: the
    float keys of the first row, at most 12). Missing values print as `-`; floats with 4 decimals."""
    first = next(iter(rows.values()))
    keys = list(keys or [k for k, v in first.items() if isinstance(v, float)][:12])
    widths = [max(9, len(k) + 1) for k in keys]
    header = f"{'':<{name_width}}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))

    def cell(value, width):
        if value is None:
            return f"{'-':>{width}}"
        if isinstance(value, float):
            return f"{value:>{width}.4f}"
        return f"{value!s:>{width}}"

    lines = [header] + [f"{name:<{name_width}}" + "".join(cell(m.get(k), w) for k, w in zip(keys, widths)) for name, m in rows.items()]
    return "\n".join(lines)


__all__ = ["machine_description", "write_json_atomic", "today", "git_commit", "format_table", "TABLE_KEYS"]
