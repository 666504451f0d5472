"""Parsing of quantities users type (flags, population files): sizes, bandwidths, durations, fractions.

Every quantity takes an explicit unit; a bare number is refused with the accepted forms, because
`--rtt 30` (seconds? milliseconds?) and `--expert-budget 12` (bytes?) are how plans go wrong
silently. Fractions are written with `%`.
"""
from __future__ import annotations

import math
import re

from core.errors import PlannerError

_NUM = r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_SIZE = re.compile(rf"^\s*{_NUM}\s*(?P<unit>[a-zA-Z]+)?\s*$")
_RATE = re.compile(rf"^\s*{_NUM}\s*(?P<unit>[a-zA-Z/]+)?\s*$")
_DURATION = re.compile(rf"^\s*{_NUM}\s*(?P<unit>[a-zA-Zµ]+)?\s*$")
_PERCENT = re.compile(rf"^\s*{_NUM}\s*(?P<unit>%)?\s*$")

SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SIZE_FORMS = "12GiB, 512MiB, 800MB or 4096B"
# bits per second; "B/s" forms are bytes per second
RATE_UNITS = {"bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9, "bit/s": 1, "kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9,
              "b/s": 8, "kb/s": 8e3, "mb/s": 8e6, "gb/s": 8e9}
RATE_FORMS = "20mbps, 1.5Gbps, 100kbps or 50MB/s"
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
DURATION_FORMS = "30ms, 0.2s or 150us"


def _bad(what: str, text: str, forms: str, why: str = "") -> PlannerError:
    problem = f"cannot read {what} '{text}'" + (f" ({why})" if why else "")
    return PlannerError(problem, f"write it with a unit, like {forms}")


def _number(m: re.Match, what: str, text: str, forms: str) -> float:
    value = float(m.group("num"))
    if not math.isfinite(value):
        raise _bad(what, text, forms, "not a finite number")
    return value


def parse_bytes(text: str, what: str = "size") -> int:
    """'24GiB', '512MB', '4096B' -> bytes. A bare number is refused."""
    m = _SIZE.match(str(text))
    if not m:
        raise _bad(what, text, SIZE_FORMS)
    if m.group("unit") is None:
        raise _bad(what, text, SIZE_FORMS, "no unit: bytes? GiB?")
    unit = m.group("unit").lower()
    if unit not in SIZE_UNITS:
        raise _bad(what, text, SIZE_FORMS, f"unknown unit '{m.group('unit')}'")
    value = _number(m, what, text, SIZE_FORMS) * SIZE_UNITS[unit]
    if value < 0:
        raise PlannerError(f"{what} '{text}' is negative", f"pass a size like {SIZE_FORMS}")
    return int(value)


def parse_rate_bits(text: str, what: str = "link") -> float:
    """'20mbps', '1.5Gbps', '100kbit/s' (bits) or '50MB/s' (bytes) -> bits per second."""
    m = _RATE.match(str(text))
    if not m:
        raise _bad(what, text, RATE_FORMS)
    if m.group("unit") is None:
        raise _bad(what, text, RATE_FORMS, "no unit: bits or bytes per second?")
    unit = m.group("unit")
    # "MB/s" is bytes, "Mb/s" and "mbps" are bits: case matters only for the B/b of "/s" forms
    key = unit.lower()
    if key.endswith("b/s") and not unit.endswith("B/s"):
        key = key[:-3] + "bit/s"
    if key not in RATE_UNITS:
        raise _bad(what, text, RATE_FORMS, f"unknown unit '{unit}'")
    value = _number(m, what, text, RATE_FORMS) * RATE_UNITS[key]
    if value < 0:
        raise PlannerError(f"{what} '{text}' is negative", f"pass a rate like {RATE_FORMS}")
    return value


def parse_seconds(text: str, what: str = "duration") -> float:
    """'30ms', '0.2s', '150us' -> seconds. A bare number is refused."""
    m = _DURATION.match(str(text))
    if not m:
        raise _bad(what, text, DURATION_FORMS)
    if m.group("unit") is None:
        raise _bad(what, text, DURATION_FORMS, "no unit: seconds? milliseconds?")
    unit = m.group("unit")
    if unit not in DURATION_UNITS:
        raise _bad(what, text, DURATION_FORMS, f"unknown unit '{unit}'")
    value = _number(m, what, text, DURATION_FORMS) * DURATION_UNITS[unit]
    if value < 0:
        raise PlannerError(f"{what} '{text}' is negative", f"pass a duration like {DURATION_FORMS}")
    return value


def parse_percent(text: str, what: str = "fraction") -> float:
    """'1%', '0.5%' -> 0.01, 0.005. A bare number is refused (is 1 one percent or all of it?)."""
    m = _PERCENT.match(str(text))
    if not m:
        raise PlannerError(f"cannot read {what} '{text}'", "write it as a percentage, like 1% or 0.5%")
    if m.group("unit") is None:
        raise PlannerError(f"cannot read {what} '{text}' (no unit: a fraction or a percentage?)",
                           "write it as a percentage, like 1% or 0.5%")
    return _number(m, what, text, "1%") / 100


def parse_link(text: str, what: str = "--link") -> tuple[float, tuple[float, float] | None]:
    """'20mbps' -> (20e6, None); '1mbps..100mbps' -> (geometric middle, (1e6, 100e6)) in bits/s."""
    if ".." in text:
        lo_t, hi_t = text.split("..", 1)
        lo, hi = parse_rate_bits(lo_t, what), parse_rate_bits(hi_t, what)
        if lo <= 0 or hi <= lo:
            raise PlannerError(f"{what} range '{text}' is empty", f"write it like {what} 1mbps..100mbps (low..high, positive)")
        return (lo * hi) ** 0.5, (lo, hi)
    rate = parse_rate_bits(text, what)
    if rate <= 0:
        raise PlannerError(f"{what} {text} is a bandwidth of 0", f"pass a positive rate, e.g. {what} 20mbps")
    return rate, None
