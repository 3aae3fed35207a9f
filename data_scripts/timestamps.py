"""Event times of any source -> int64 seconds since 1970-01-01 UTC, the one time unit of a processed folder.

Accepted: integers or decimals in `s`, `ms`, `us` or `ns` (numbers or numeric text), ISO 8601 text (`iso`: dates,
date-times with or without seconds, fractions or a zone: `2000-12-31`, `2000-12-31T22:12:40Z`, `2000-12-31
22:12:40+01:00`; no zone means UTC), and Arrow timestamp / date columns (Parquet). `detect_unit` picks the unit from
the first values (numbers by magnitude: < 1e11 seconds, < 1e14 milliseconds, < 1e17 microseconds, else
nanoseconds); `check_range` refuses times that only make sense in another unit.
"""

import datetime
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNITS = ("s", "ms", "us", "ns", "iso")
PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
MAX_SECONDS = 2**40  # year 36812: anything later cannot be an event time
_INT = r"^\s*[+-]?\d+\s*$"
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_ISO = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$"
_ZONE = r"(Z|[+-]\d{2}:?\d{2})$"


def detect_unit(array: pa.Array) -> tuple[str, str]:
    """`(unit, how)` for a column of times, from its type or the magnitude of its first values."""
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        return "native", f"the column's type {array.type}"
    values = array.drop_null()[:10_000]
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        numeric = pc.match_substring_regex(values, _NUMBER)
        if len(values) == 0 or pc.sum(numeric).as_py() * 2 < len(values):  # mostly not numbers: dates
            return "iso", "text that is not a number"
        values = pc.cast(values.filter(numeric), pa.float64())
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise ValueError(f"times of type {array.type} are neither numbers, text nor timestamps: convert the column")
    if len(values) == 0:
        return "s", "no values"
    median = float(np.median(np.abs(values.to_numpy(zero_copy_only=False))))
    for unit, bound in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if median < bound:
            return unit, f"the magnitude of the values (median {median:.3g})"
    return "ns", f"the magnitude of the values (median {median:.3g})"


def _numeric_seconds(values: pa.Array, unit: str):
    """`(seconds int64, ok bool)` of numbers or numeric text in `unit`."""
    ok = np.ones(len(values), dtype=bool)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        is_int = pc.fill_null(pc.match_substring_regex(values, _INT), False)
        if pc.all(is_int).as_py():
            values = pc.cast(pc.utf8_trim_whitespace(values), pa.int64())
        else:
            good = pc.fill_null(pc.match_substring_regex(values, _NUMBER), False)
            ok &= good.to_numpy(zero_copy_only=False)
            values = pc.cast(pc.utf8_trim_whitespace(pc.if_else(good, values, "0")), pa.float64())
    ok &= values.is_valid().to_numpy(zero_copy_only=False)
    raw = values.fill_null(0).to_numpy(zero_copy_only=False)
    scale = PER_SECOND[unit]
    if np.issubdtype(raw.dtype, np.integer):
        return np.floor_divide(raw.astype(np.int64), scale), ok
    finite = np.isfinite(raw) & (np.abs(raw) < 9e18)
    ok &= finite
    return np.floor(np.where(finite, raw, 0) / scale).astype(np.int64), ok


def _iso_seconds(values: pa.Array):
    """`(seconds int64, ok bool)` of ISO 8601 text; a time without a zone is UTC."""
    values = pc.utf8_trim_whitespace(values)
    ok = pc.fill_null(pc.match_substring_regex(values, _ISO), False).to_numpy(zero_copy_only=False)
    zoned = pc.fill_null(pc.match_substring_regex(values, _ZONE), False).to_numpy(zero_copy_only=False)
    seconds = np.zeros(len(values), dtype=np.int64)
    for mask, kind in ((ok & zoned, pa.timestamp("us", tz="UTC")), (ok & ~zoned, pa.timestamp("us"))):
        if not mask.any():
            continue
        subset = values.filter(pa.array(mask))
        try:
            micros = pc.cast(subset, kind).cast(pa.int64()).to_numpy(zero_copy_only=False)
            seconds[mask] = np.floor_divide(micros, 10**6)
        except pa.ArrowInvalid:  # a well-formed string that is no date (month 13): find it value by value
            rows = np.flatnonzero(mask)
            for row, text in zip(rows, subset.to_pylist()):
                try:
                    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
                except ValueError:
                    ok[row] = False
                    continue
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=datetime.timezone.utc)
                seconds[row] = int(parsed.timestamp())
    return seconds, ok


def to_seconds(array: pa.Array, unit: str):
    """`(seconds (N,) int64, ok (N,) bool)`: each value in whole seconds (floored); `ok` is False where a value is
    missing, does not parse, or lies outside [1970, year 36812]."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if unit == "native" or pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        if pa.types.is_date(array.type):
            array = pc.cast(array, pa.timestamp("s"))
        per = PER_SECOND[array.type.unit]
        raw = array.cast(pa.int64())
        seconds = np.floor_divide(raw.fill_null(0).to_numpy(zero_copy_only=False), per)
        ok = raw.is_valid().to_numpy(zero_copy_only=False)
    elif unit == "iso":
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            raise ValueError(f"--time_unit iso needs text times, but the column holds {array.type}: pass its unit (s, ms, us, ns)")
        seconds, ok = _iso_seconds(array)
    else:
        seconds, ok = _numeric_seconds(array, unit)
    ok &= array.is_valid().to_numpy(zero_copy_only=False)
    ok &= (seconds >= 0) & (seconds < MAX_SECONDS)
    return seconds, ok


def check_range(first: int, last: int, unit: str, column: str, now: float | None = None) -> None:
    """Refuses times that look like the wrong unit: all of them in 1970, or any in the future (a day of slack).

    `first` / `last` are the earliest and latest times in seconds as read with `unit`; the message names the unit
    that would put the latest time between 1990 and now, when one does."""
    now = time.time() if now is None else now
    if unit not in PER_SECOND:
        likely = None
    else:
        raw = last * PER_SECOND[unit]
        likely = next((u for u in PER_SECOND if 631152000 <= raw / PER_SECOND[u] <= now), None)  # 1990-01-01 .. now
    hint = f"they look like {likely!r}: pass --time_unit {likely}" if likely and likely != unit else (
        "they are not epoch times: check how the file was exported (a spreadsheet or a pandas default can truncate times), "
        "or pass the right --time_unit")
    def stamp(seconds: int) -> str:
        if seconds > 253402300799:
            return "after the year 9999"
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    if last < 365 * 86400:
        raise ValueError(f"every time in column {column!r} read as {unit!r} falls in 1970 (latest {stamp(last)}); {hint}")
    if last > now + 86400:
        raise ValueError(f"times in column {column!r} read as {unit!r} reach into the future ({stamp(last)}, "
                         f"earliest {stamp(first)}); {hint}")


__all__ = ["UNITS", "PER_SECOND", "detect_unit", "to_seconds", "check_range"]
