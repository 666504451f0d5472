"""Formatting of quantities for tables and messages (parsing lives in `core.units`)."""
from __future__ import annotations


def fmt_bytes(n: float) -> str:
    """Human-readable bytes (binary units)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 100 else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


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


def fmt_byte_rate(bytes_per_s: float) -> str:
    """Bytes per second, human-readable (decimal units, as bandwidths are quoted)."""
    for div, suffix in ((1e12, " TB/s"), (1e9, " GB/s"), (1e6, " MB/s"), (1e3, " kB/s")):
        if bytes_per_s >= div:
            return f"{bytes_per_s / div:.3g}{suffix}"
    return f"{bytes_per_s:.3g} B/s"


def fmt_seconds(s: float) -> str:
    """A duration in the unit that reads best (us, ms, s)."""
    if s < 1e-3:
        return f"{s * 1e6:.3g} us"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"
