"""fed-graph's cost model: bytes per round and to a target accuracy (pure arithmetic).

Per round every client uploads its model and downloads one model (its fused model; FedAvg: the global one):
bytes/round = n * (upload + download) = 2 n * model_bytes, the same for every configuration here. Before the
first round each client uploads its signature once (FedGCF and GCFL-style need no extra: GCFL-style clusters
from the uploads it already has). Total to a target = signatures + bytes/round * rounds to reach the target:
the fusion's gain comes from fewer rounds, not smaller ones (spec section 6).
"""
from __future__ import annotations

import numpy as np


def bytes_per_round(num_clients: int, model_bytes: int) -> int:
    """Uploads plus downloads of one round (fp32 models, no compression)."""
    return 2 * int(num_clients) * int(model_bytes)


def rounds_to_target(curve: np.ndarray, target: float) -> int | None:
    """First r (rounds done) whose accuracy reaches `target`, or None."""
    hit = np.flatnonzero(np.asarray(curve) >= target - 1e-12)
    return int(hit[0]) if hit.size else None


def bytes_to_target(curve: np.ndarray, target: float, num_clients: int, model_bytes: int,
                    signature_bytes: int, uses_signatures: bool) -> int | None:
    """Signatures (once, if the configuration uses them) + bytes/round * rounds to target; None if never reached."""
    r = rounds_to_target(curve, target)
    if r is None:
        return None
    return (num_clients * signature_bytes if uses_signatures else 0) + r * bytes_per_round(num_clients, model_bytes)
