"""Parsing and formatting of quantities users type: sizes, bandwidths, percentages, durations."""
from __future__ import annotations

import re

from core.errors import PlannerError

_SIZE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[kKmMgGtT]i?[bB]|[bB])?\s*$")
_RATE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[kKmMgG]?)(?P<kind>bps|bit/s|b/s|B/s)\s*$")
_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str, what: str = "size") -> int:
    """'24GiB', '512MB', '1e9' -> bytes."""
    m = _SIZE.match(text)
    if not m:
        try:
            value = float(text)
        except ValueError:
            raise PlannerError(f"cannot read {what} '{text}'", "write it like 12GiB, 512MB or a byte count") from None
        return int(value)
    unit = (m.group("unit") or "b").lower()
    return int(float(m.group("num")) * _UNITS[unit])


def parse_rate_bits(text: str, what: str = "link") -> float:
    """'20mbps', '1.5Gbps', '100kbit/s' -> bits per second."""
    m = _RATE.match(text)
    if not m:
        raise PlannerError(f"cannot read {what} '{text}'", "write it like 20mbps or 1Gbps")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group("unit").lower()]
    value = float(m.group("num")) * scale
    if m.group("kind") == "B/s":
        value *= 8
    return value


def fmt_bytes(n: float) -> str:
    """Human-readable bytes (binary units)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def fmt_count(n: float) -> str:
    """1.23 B, 45.6 M, ..."""
    for div, suffix in ((1e12, " T"), (1e9, " B"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


def fmt_rate(bits_per_s: float) -> str:
    """Bits per second, human-readable."""
    for div, suffix in ((1e9, " Gbit/s"), (1e6, " Mbit/s"), (1e3, " kbit/s")):
        if bits_per_s >= div:
            return f"{bits_per_s / div:.3g}{suffix}"
    return f"{bits_per_s:.3g} bit/s"


_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|us)?\s*$")


def parse_seconds(text: str, what: str = "duration") -> float:
    """'30ms', '0.2s', '150us', '0.03' -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise PlannerError(f"cannot read {what} '{text}'", "write it like 30ms or 0.2s")
    return float(m.group("num")) * {"ms": 1e-3, "s": 1.0, "us": 1e-6, None: 1.0}[m.group("unit")]


def parse_link(text: str) -> tuple[float, tuple[float, float] | None]:
    """'20mbps' -> (20e6, None); '1mbps..100mbps' -> (geometric middle, (1e6, 100e6)) in bits/s."""
    if ".." in text:
        lo_t, hi_t = text.split("..", 1)
        lo, hi = parse_rate_bits(lo_t, "--link"), parse_rate_bits(hi_t, "--link")
        if lo <= 0 or hi <= lo:
            raise PlannerError(f"--link range '{text}' is empty", "write it like 1mbps..100mbps (low..high, positive)")
        return (lo * hi) ** 0.5, (lo, hi)
    rate = parse_rate_bits(text, "--link")
    if rate <= 0:
        raise PlannerError("the link bandwidth is 0", "pass a positive --link, e.g. --link 20mbps")
    return rate, None
