"""Training-step timings on this CPU, for fed-compress plans made with `--calibrate` and for the runtime's
device emulation.

`calibrate_training(model, example)` times SGD steps (forward, backward, update) at three batch sizes
with one thread (as the federated clients run) and fits `t(β) = a + b·β` by least squares;
`cpu_flops_per_s()` times a single-thread fp32 matmul. A device's emulated time is this CPU's time
multiplied by `CPU FLOP/s / device FLOP/s`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from profilers.timing import median_s


def cpu_flops_per_s(size: int = 256, repeats: int = 20) -> float:
    """Sustained fp32 FLOP/s of one thread of this CPU (median of `repeats` size×size matmuls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
        return 2.0 * size**3 / median_s(lambda: a @ b, repeats)
    finally:
        torch.set_num_threads(threads)


def calibrate_training(model: torch.nn.Module, example: torch.Tensor, num_classes: int = 10,
                       batches: tuple[int, ...] = (8, 32, 64), repeats: int = 15) -> dict[str, float]:
    """{"iter_fixed_s": a, "iter_per_sample_s": b, "cpu_flops_per_s": F, ...} for one SGD step on this CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = copy.deepcopy(model).train()
        opt = torch.optim.SGD(m.parameters(), lr=0.0)
        g = torch.Generator().manual_seed(0)
        times = []
        for b in batches:
            x = torch.randn((b, *example.shape[1:]), generator=g)
            y = torch.randint(0, num_classes, (b,), generator=g)

            def step() -> None:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(x), y).backward()
                opt.step()

            times.append(median_s(step, repeats))
    finally:
        torch.set_num_threads(threads)
    slope, intercept = np.polyfit(np.asarray(batches, dtype=float), np.asarray(times), 1)
    return {"iter_fixed_s": float(max(intercept, 0.0)), "iter_per_sample_s": float(max(slope, 0.0)),
            "cpu_flops_per_s": cpu_flops_per_s(), "batches": list(batches), "step_s": [float(t) for t in times]}
