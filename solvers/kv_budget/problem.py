"""The kv-budget problem: every candidate configuration measured on a calibration sample of requests.

Rows are configurations (GVote knob settings, each kvpress press at each fixed ratio, the full cache), columns
are calibration requests. What the real model measured is data here; the solver only chooses. Units: bytes,
seconds, scores in [0, 1] (accuracy points = 100 x score).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

FULL = "full"
GVOTE = "gvote"


@dataclass(frozen=True)
class KvBudgetProblem:
    """Measured calibration table.

    configs: knobs per row ({"method": "gvote", "p_nuc", "n_samples", "n_sink", "window", "cap_fraction"} or
    {"method": press name, "ratio"} or {"method": "full"}).
    kv_bytes: (rows, requests) KV bytes the keep sets hold after prefill (keys and values, every layer and head).
    score: (rows, requests) task score of the answer decoded against that cache, in [0, 1].
    select_s: (rows, requests) seconds to compute the keep sets; prefill_s: (requests,) full prefill seconds.
    lengths: (requests,) prompt tokens; tasks: task name per request.
    oracle_bytes: (requests,) bytes of the oracle keep sets (nucleus of the actual decoding queries).
    recall: (rows, requests) |keep ∩ oracle| / |oracle|.
    token_bytes: KV bytes of one prompt token in the full cache. free_memory_bytes: device memory left for KV.
    max_accuracy_drop: allowed drop vs the full cache (fraction: 0.01 = 1 point).
    """

    configs: tuple[Mapping[str, Any], ...]
    kv_bytes: np.ndarray
    score: np.ndarray
    select_s: np.ndarray
    prefill_s: np.ndarray
    lengths: np.ndarray
    tasks: tuple[str, ...]
    oracle_bytes: np.ndarray
    recall: np.ndarray
    token_bytes: float
    free_memory_bytes: float
    max_accuracy_drop: float
    max_kv_bytes_per_request: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_cfg, n_req = len(self.configs), len(self.tasks)
        for name in ("kv_bytes", "score", "select_s", "recall"):
            if getattr(self, name).shape != (n_cfg, n_req):
                raise ValueError(f"{name} must be ({n_cfg}, {n_req}), got {getattr(self, name).shape}")
        for name in ("prefill_s", "lengths", "oracle_bytes"):
            if getattr(self, name).shape != (n_req,):
                raise ValueError(f"{name} must have one entry per request")
        if self.full_index < 0:
            raise ValueError("the table needs the full-cache row")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError("max_accuracy_drop is a fraction in [0, 1]")

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(str(c["method"]) for c in self.configs)

    @property
    def full_index(self) -> int:
        return self.methods.index(FULL) if FULL in self.methods else -1

    def rows(self, method: str) -> list[int]:
        """Rows of one method, in table order."""
        return [i for i, m in enumerate(self.methods) if m == method]
