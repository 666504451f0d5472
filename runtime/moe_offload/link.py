"""Host->device copy engines: a real CUDA side stream, or an emulated link on the CPU (labelled).

Both serve copy jobs in FIFO order. The emulated link performs the real tensor copy between a
"host" and a "device" tensor in a worker thread and holds the job until bytes / bandwidth seconds
after the link became free, so transfers take the time the plan's link would take.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

EMULATED_LABEL = "emulated link: real tensor copies paced at the plan's bandwidth on the CPU (not a PCIe measurement)"


@dataclass
class CopyJob:
    """One queued copy: done when `event` is set (CPU) or `cuda_event` has completed (CUDA)."""

    nbytes: int
    copy: Callable[[], None]
    event: threading.Event = field(default_factory=threading.Event)
    cuda_event: object | None = None
    submitted_s: float = 0.0
    finished_s: float = 0.0

    def done(self) -> bool:
        """True once the copy has landed (non-blocking)."""
        if self.cuda_event is not None:
            return bool(self.cuda_event.query())  # type: ignore[attr-defined]
        return self.event.is_set()

    def wait(self) -> float:
        """Block the compute side until the copy has landed; returns seconds waited."""
        t0 = time.perf_counter()
        if self.cuda_event is not None:
            torch.cuda.current_stream().wait_event(self.cuda_event)  # type: ignore[arg-type]
            return 0.0
        self.event.wait()
        return time.perf_counter() - t0


class EmulatedLink:
    """FIFO link thread at `bandwidth_bytes_per_s` (bytes/s)."""

    label = EMULATED_LABEL

    def __init__(self, bandwidth_bytes_per_s: float) -> None:
        if bandwidth_bytes_per_s <= 0:
            raise ValueError("link bandwidth must be positive")
        self.bandwidth = float(bandwidth_bytes_per_s)
        self._q: "queue.Queue[CopyJob | None]" = queue.Queue()
        self._free_at = 0.0
        self.bytes_moved = 0
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._serve, name="emulated-link", daemon=True)
        self._thread.start()

    def submit(self, nbytes: int, copy: Callable[[], None]) -> CopyJob:
        """Queue a copy of `nbytes` bytes."""
        job = CopyJob(nbytes, copy, submitted_s=time.perf_counter())
        self._q.put(job)
        return job

    def _serve(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            start = max(time.perf_counter(), self._free_at)
            duration = job.nbytes / self.bandwidth
            job.copy()
            end = start + duration
            delay = end - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self._free_at = end
            self.bytes_moved += job.nbytes
            self.busy_s += duration
            job.finished_s = time.perf_counter()
            job.event.set()

    def close(self) -> None:
        """Stop the worker thread."""
        self._q.put(None)
        self._thread.join(timeout=5)


class CudaLink:
    """Copies on a side CUDA stream from pinned host memory; completion tracked with CUDA events."""

    label = "CUDA side stream, pinned host memory (measured)"

    def __init__(self) -> None:
        self.stream = torch.cuda.Stream()
        self.bytes_moved = 0
        self.busy_s = 0.0

    def submit(self, nbytes: int, copy: Callable[[], None]) -> CopyJob:
        """Enqueue the copy on the side stream (after the compute stream's current work)."""
        job = CopyJob(nbytes, copy, submitted_s=time.perf_counter())
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            copy()
            ev = torch.cuda.Event()
            ev.record(self.stream)
        job.cuda_event = ev
        self.bytes_moved += nbytes
        return job

    def close(self) -> None:
        """Wait for outstanding copies."""
        self.stream.synchronize()
