"""fed-compress calibration: one SGD training step of the model on this CPU at three batch sizes, and
this CPU's single-thread FLOP/s (the reference of the runtime's device emulation)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import PlannerError
from planner.calibration import read_calibration as read_file

KEYS = ("iter_fixed_s", "iter_per_sample_s", "cpu_flops_per_s")


def initial_model(spec: Any, seed: int) -> Any:
    """The untrained model federated training starts from (seeded), and an example input."""
    import torch

    from profilers.digits_cnn import DigitsCNN

    if spec.kind != "digits-cnn":
        raise PlannerError(f"fed-compress trains digits-cnn on scikit-learn digits, not {spec.name}",
                           "plan digits-cnn with --scenario fed-compress")
    torch.manual_seed(seed)
    return DigitsCNN(), torch.zeros(2, 1, 8, 8)


def measure(spec: Any, tiny: bool) -> dict[str, Any]:
    """t(β) = a + b·β for one training step (one thread), and this CPU's FLOP/s."""
    from profilers.training_timing import calibrate_training

    model, example = initial_model(spec, 0)
    return calibrate_training(model, example)


def read_calibration(path: Path, spec: Any, tiny: bool) -> tuple[dict[str, float], dict[str, str]]:
    """(the measured step-time fit and CPU FLOP/s, the plan's record of the file)."""
    measured, record = read_file(path, "fed-compress", spec, tiny)
    if not all(isinstance(measured.get(k), (int, float)) and measured[k] >= 0 for k in KEYS):
        raise PlannerError(f"--calibration {path} lacks the fed-compress step times",
                           "re-create it with `planner calibrate digits-cnn --scenario fed-compress -o FILE`")
    return {k: float(measured[k]) for k in KEYS}, record
