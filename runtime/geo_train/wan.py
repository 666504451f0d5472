"""WAN emulation (labelled): a torchft process group whose collectives complete as if carried by a WAN link.

This kernel has no netem, so the one-way delay and the rate are emulated in the transport: the real gloo
all-reduce runs on loopback, and `wait()` on its work returns no earlier than the moment the emulated link
would have delivered it. The link is one FIFO per region: an all-reduce of B payload bytes among M regions
occupies it for 2*(M-1)/M * B * 8 / rate seconds (ring all-reduce volume) after the previous transfer ends,
and its result arrives one RTT after its last byte left. Compute keeps running meanwhile, so a transfer that
finishes before anyone waits on it costs nothing; the time a caller spends blocked in `wait()` is the
exposed communication, recorded in `WanLedger`.

The quorum and commit RPCs of torchft's Manager (tiny messages) are not delayed: only the data plane is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torchft.process_group import ProcessGroupGloo


@dataclass
class WanLedger:
    """What the emulated link carried and how long callers were blocked on it."""

    payload_bytes: int = 0          # all-reduce payload handed to the link (this region's tensors)
    wire_bytes: float = 0.0         # ring all-reduce volume sent by this region, 2*(M-1)/M * payload
    transfers: int = 0
    blocked_s: float = 0.0          # time spent inside wait() (exposed communication)
    busy_s: float = 0.0             # time the emulated link was transmitting
    waits: list[float] = field(default_factory=list)


class _EmulatedWork(dist._Work):
    """A gloo work whose wait() returns no earlier than the emulated arrival time."""

    def __init__(self, work: dist._Work, ready_at: float, ledger: WanLedger) -> None:
        super().__init__()
        self._work = work
        self._ready_at = ready_at
        self._ledger = ledger
        self._done = False

    def wait(self, timeout: Optional[timedelta] = None) -> bool:
        t0 = time.perf_counter()
        ok = self._work.wait() if timeout is None else self._work.wait(timeout)
        if not self._done:
            rest = self._ready_at - time.perf_counter()
            if rest > 0:
                time.sleep(rest)
            self._done = True
        blocked = time.perf_counter() - t0
        self._ledger.blocked_s += blocked
        self._ledger.waits.append(blocked)
        return bool(ok) if ok is not None else True

    def get_future(self) -> torch.futures.Future:
        return self._work.get_future()

    def is_completed(self) -> bool:
        return self._work.is_completed() and time.perf_counter() >= self._ready_at


class WanProcessGroupGloo(ProcessGroupGloo):
    """torchft's reconfigurable gloo group with an emulated WAN link on its all-reduces (labelled)."""

    def __init__(self, rate_bps: float, rtt_s: float, regions: int, timeout: timedelta = timedelta(seconds=30)) -> None:
        super().__init__(timeout=timeout)
        if rate_bps <= 0 or rtt_s < 0 or regions < 1:
            raise ValueError("the emulated WAN needs a positive rate, a non-negative RTT and at least one region")
        self.rate_bps = float(rate_bps)
        self.rtt_s = float(rtt_s)
        self.regions = int(regions)
        self.ledger = WanLedger()
        self._link_free_at = 0.0

    def transfer_s(self, payload_bytes: int) -> float:
        """Seconds the link is busy with one all-reduce of `payload_bytes`."""
        volume = 2.0 * (self.regions - 1) / self.regions * payload_bytes
        return volume * 8.0 / self.rate_bps

    def allreduce(self, tensors: List[torch.Tensor], opts: Any) -> dist._Work:
        work = super().allreduce(tensors, opts)
        payload = sum(int(t.numel()) * t.element_size() for t in tensors)
        now = time.perf_counter()
        start = max(now, self._link_free_at)
        busy = self.transfer_s(payload)
        self._link_free_at = start + busy
        led = self.ledger
        led.payload_bytes += payload
        led.wire_bytes += 2.0 * (self.regions - 1) / self.regions * payload
        led.transfers += 1
        led.busy_s += busy
        return _EmulatedWork(work, self._link_free_at + self.rtt_s, led)
