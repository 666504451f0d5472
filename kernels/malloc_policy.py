"""The allocator policy fed-lora clients run under, so their resident memory follows the live bytes the plan's
memory model predicts.

glibc's malloc serves a request above its mmap threshold with its own mapping (returned to the system on free)
and smaller ones from the heap, whose freed chunks it keeps. By default the threshold starts at 128 KiB and
RAISES itself (up to 32 MiB on 64-bit) each time a mapped chunk is freed, so after the first training step the
step's multi-MiB activations come from the heap and the freed heap stays resident: measured on SmolLM2:4L, a
fresh process's peak RSS during a step exceeded the live bytes by 3-12 %, depending on the heap's history
(docs/fed-lora.md). `pin_mmap_threshold()` fixes the threshold (mallopt M_MMAP_THRESHOLD, which also turns the
dynamic adjustment off), as the environment variable MALLOC_MMAP_THRESHOLD_ would at process start.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3                 # glibc's mallopt parameter number
DEFAULT_THRESHOLD_BYTES = 128 * 1024
_pinned: list[int] = []


def pin_mmap_threshold(threshold_bytes: int = DEFAULT_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold_bytes` (B) for this process, once; False where the C library is not
    glibc (nothing changes there)."""
    if _pinned:
        return _pinned[0] == threshold_bytes
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        ok = False
    if ok:
        _pinned.append(int(threshold_bytes))
    else:
        log.info("could not fix the malloc mmap threshold (not glibc?); resident memory may exceed live bytes")
    return ok
