"""README "Results" (issue 40): one screen, and every figure in its tables found in the results file its row cites.

A figure is any number in a row's result columns ("ours", "95% interval", "published"); it is found when some number
of the cited file (JSON or JSON Lines, nested anywhere) rounds to it at the precision it is written with: `.1978`
to 4 decimals, `+3.30%` as 0.0330 to 4 decimals (or 3.30 when the file stores percents), `6.5 GB` from megabytes,
`1,017` to the unit. The "published" column is checked against `benchmarks/results/published.json`, the recipe
column (model sizes, settings) is not checked, and the reproduce column must name a recipe of `benchmarks.reproduce`.
"""

import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
NUMBER = re.compile(r"(?<![\w@.])([-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+))(%|\s?GB|\s?s\b|\s?ms\b)?")


def results_section(readme: str) -> str:
    start = readme.index("\n## Results\n") + 1
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def numbers_in(value, out: list) -> list:
    """Every number in a parsed JSON value, nested anywhere (bools left out)."""
    if isinstance(value, dict):
        for item in value.values():
            numbers_in(item, out)
    elif isinstance(value, list):
        for item in value:
            numbers_in(item, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append(float(value))
    return out


def load_numbers(name: str) -> list:
    path = os.path.join(RESULTS, name)
    with open(path) as f:
        if name.endswith(".jsonl"):
            return numbers_in([json.loads(line) for line in f if line.strip()], [])
        return numbers_in(json.load(f), [])


def found(token: str, unit: str | None, values: list) -> bool:
    """Whether a written figure (`token` with its `unit`) is some value of `values` rounded as written."""
    text = token.replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    shown, tolerance = float(text), 0.5 * 10 ** -decimals + 1e-9
    unit = (unit or "").strip()
    scales = {"%": (100.0, 1.0), "GB": (1e-3, 1 / 1024)}.get(unit, (1.0,))
    return any(abs(v * scale - shown) <= tolerance for v in values for scale in scales)


def figures(cell: str) -> list:
    return [(m.group(1), m.group(2)) for m in NUMBER.finditer(cell)]


def table_rows(section: str):
    """(columns, cells) of every body row of every table in the section."""
    columns = None
    for line in section.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if columns is None:
            columns = cells
        elif not set("".join(cells)) <= set("-: "):
            yield columns, cells


def test_results_fit_one_screen():
    section = results_section(open(os.path.join(ROOT, "README.md")).read())
    lines = section.rstrip("\n").splitlines()
    assert len(lines) <= 60, f"README Results has {len(lines)} lines (at most 60)"
    prose = [line for line in lines if line.strip() and not line.startswith(("|", "#", "!["))]
    assert len(prose) <= 12, f"{len(prose)} lines of prose outside tables and images (at most 12): {prose}"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    assert len(images) >= 3 and all(os.path.exists(os.path.join(ROOT, path)) for path in images), images


def test_every_figure_in_the_results_tables_is_in_the_file_its_row_cites():
    from benchmarks.reproduce import RECIPES

    section = results_section(open(os.path.join(ROOT, "README.md")).read())
    published = load_numbers("published.json")
    missing, rows = [], 0
    for columns, cells in table_rows(section):
        rows += 1
        row = dict(zip(columns, cells))
        files = re.findall(r"`([\w.\-]+\.jsonl?)`", row["results"])
        assert files, f"a Results row cites no results file: {cells[0]}"
        for name in files:
            assert os.path.exists(os.path.join(RESULTS, name)), f"{name} (cited by {cells[0]!r}) is not in benchmarks/results"
        recipe = re.findall(r"`([\w\-]+)`", row["reproduce"])
        assert recipe and all(r in RECIPES for r in recipe), f"{row['reproduce']} is not a benchmarks.reproduce recipe ({cells[0]})"
        values = [v for name in files for v in load_numbers(name)]
        for column, pool in (("ours", values), ("95% interval", values), ("95% interval (3 seeds)", values), ("published", published)):
            for token, unit in figures(row.get(column, "")):
                if not found(token, unit, pool):
                    missing.append(f"{token}{unit or ''} in {column!r} of {cells[0]!r} (files: {', '.join(files)})")
    assert rows >= 15
    assert not missing, "figures not found in their results files:\n" + "\n".join(missing)


@pytest.mark.parametrize("token,unit,values,expected", [
    (".1978", None, [0.19784638], True), (".1978", None, [0.19794], False), ("+3.30", "%", [0.0330024], True),
    ("-1.93", "%", [-0.019271], True), ("6.5", " GB", [6460.6], True), ("1,017", None, [1016.5], True),
    ("338", " s", [337.7], True), ("128.4", " s", [128.38], True), ("1,017", None, [1015.0], False),
])
def test_figure_matching_rounds_as_written(token, unit, values, expected):
    assert found(token, unit, values) is expected
