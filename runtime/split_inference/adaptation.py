"""Online adaptation on the edge (docs/split-inference.md §5): measure the uplink, switch to the plan-table row for it.

Per message the edge knows when it handed the frame to the transport (`handed`) and, from the cloud's
timestamp, when it arrived (`arrival`, edge clock). With a FIFO link and a one-way delay `d` (half the
handshake RTT), the sender finished message i−1 at `arrival[i−1] − d`, so message i occupied the link
from `start = max(handed[i], arrival[i−1] − d)` to `arrival[i] − d` and its goodput is

    bw_i = 8 · bytes_i / (arrival[i] − d − start)          bit/s

(the same formula whether the link idled before it or ran back to back); `d` is half the handshake RTT,
capped by the fastest hand-over-to-arrival time seen (an upper bound of `d`). The estimate is an EWMA
(α = 0.3) of the samples. `TableController` maps the estimate to the plan table's row with the
largest bandwidth level not above it (the plan made for a link at least as fast as the one measured
would overload it) and switches only after `switch_samples` consecutive samples point at the same
other row, so one noisy message does not move the cut. Each switch is recorded for the receipt.
When the current row sends little or nothing (all-edge), the edge sends PROBE frames of the size of
the smallest cut in the table so the link is still measured (see `pipeline.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

MIN_SAMPLE_S = 2e-4   # transfers shorter than this are below the clocks' resolution here: no sample


def goodput_bits_per_s(nbytes: int, handed: float, arrival: float, prev_arrival: float | None,
                       one_way_s: float) -> float | None:
    """One message's uplink goodput (bit/s), or None when the transfer was too short to time."""
    start = handed if prev_arrival is None else max(handed, prev_arrival - one_way_s)
    dur = arrival - one_way_s - start
    if nbytes <= 0 or dur < MIN_SAMPLE_S:
        return None
    return 8.0 * nbytes / dur


def link_time_s(handed: float, arrival: float, prev_arrival: float | None, one_way_s: float) -> float:
    """Time the message held the link plus the one-way delay (s): comparable to the plan's T_t."""
    start = handed if prev_arrival is None else max(handed, prev_arrival - one_way_s)
    return max(0.0, arrival - start)


@dataclass
class BandwidthEstimator:
    """EWMA of per-message goodput samples (bit/s)."""

    alpha: float = 0.3
    value: float | None = None
    samples: int = 0

    def add(self, bits_per_s: float) -> float:
        """Fold one sample in; returns the new estimate."""
        self.samples += 1
        self.value = bits_per_s if self.value is None else self.alpha * bits_per_s + (1 - self.alpha) * self.value
        return self.value


@dataclass(frozen=True)
class TableRow:
    """One plan-table entry: the bandwidth it was planned for and the partition it runs."""

    uplink_bits_per_s: float
    partition: str


@dataclass(frozen=True)
class Switch:
    """One change of partition, for the receipt."""

    after_request: int
    from_partition: str
    to_partition: str
    measured_bits_per_s: float
    row_bits_per_s: float


@dataclass
class TableController:
    """Chooses the plan-table row for the measured bandwidth, with `switch_samples` of hysteresis."""

    rows: Sequence[TableRow]
    current: int
    switch_samples: int = 20
    switches: list[Switch] = field(default_factory=list)
    _candidate: int = -1
    _streak: int = 0

    def __post_init__(self) -> None:
        self.rows = sorted(self.rows, key=lambda r: r.uplink_bits_per_s)
        if not self.rows:
            raise ValueError("a plan table needs at least one row")
        if not 0 <= self.current < len(self.rows):
            raise ValueError(f"row {self.current} is outside the table")

    @classmethod
    def starting_at(cls, rows: Sequence[TableRow], bits_per_s: float, switch_samples: int = 20) -> "TableController":
        """A controller starting at the row nearest (in log scale) to the planned link rate."""
        ordered = sorted(rows, key=lambda r: r.uplink_bits_per_s)
        start = min(range(len(ordered)), key=lambda i: abs(math.log(ordered[i].uplink_bits_per_s / bits_per_s)))
        return cls(ordered, start, switch_samples)

    @property
    def partition(self) -> str:
        """The partition of the current row."""
        return self.rows[self.current].partition

    def target(self, bits_per_s: float) -> int:
        """The row with the largest bandwidth level not above `bits_per_s` (the lowest row below them all)."""
        best = 0
        for i, r in enumerate(self.rows):
            if r.uplink_bits_per_s <= bits_per_s * (1 + 1e-9):
                best = i
        return best

    def observe(self, bits_per_s: float, after_request: int) -> Switch | None:
        """Feed the current estimate; returns the Switch when the row changes."""
        t = self.target(bits_per_s)
        if self.rows[t].partition == self.partition:
            self._candidate, self._streak = -1, 0
            return None
        if t == self._candidate:
            self._streak += 1
        else:
            self._candidate, self._streak = t, 1
        if self._streak < self.switch_samples:
            return None
        sw = Switch(after_request, self.partition, self.rows[t].partition, bits_per_s, self.rows[t].uplink_bits_per_s)
        self.current, self._candidate, self._streak = t, -1, 0
        self.switches.append(sw)
        return sw
