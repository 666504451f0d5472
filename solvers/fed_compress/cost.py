"""The fed-compress cost model: exact payload bytes per direction, round times, metrics (docs/fed-compress.md, "Cost model").

Bytes per tensor of P elements at keep fraction k (K = ceil(k·P) clamped to [1, P]); tensors under
`min_compress_numel` travel dense, and a sparse encoding never costs more than dense (the codec then
sends dense):

    dense      4·P
    upload     min(4·P, 4·K + min(4·K, ceil(P/8)))                          values + index or bitmap
    download   min(4·P, 4·K + min(4·K, ceil(P/8)) + ceil((P−K)/8) + 8)       + signs + mean, max
    quant      min(4·P, ceil(P·b/8) + 8)                                     codes + offset, step

These are the sizes of the arrays `kernels/compression.py` puts on the wire (a test checks equality).
Round time of device i: `M_i = τ·(a_i + b_i·β_i) + bytes_down/BWd_i + bytes_up/BWu_i + lat_i`.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from solvers.fed_compress.problem import FedCompressMetrics, FedCompressProblem

VALUE_BYTES = 4
INDEX_BYTES = 4
DOWNLOAD_STATS_BYTES = 8
QUANT_META_BYTES = 8


def kept_count(numel: int, keep: float) -> int:
    """K = ceil(keep·P) clamped to [1, P] (the same float guard as the codec)."""
    return min(int(numel), max(1, math.ceil(keep * numel - 1e-9)))


def _model_bytes(numels: tuple[int, ...], keep: float, direction: str, min_numel: int, bits: int) -> int:
    total = 0
    for p in numels:
        dense = VALUE_BYTES * p
        if p < min_numel or (direction != "quant" and keep >= 1.0):
            total += dense
            continue
        if direction == "quant":
            total += min(dense, math.ceil(p * bits / 8) + QUANT_META_BYTES)
            continue
        k = kept_count(p, keep)
        sparse = VALUE_BYTES * k + min(INDEX_BYTES * k, math.ceil(p / 8))
        if direction == "down":
            sparse += math.ceil((p - k) / 8) + DOWNLOAD_STATS_BYTES
        total += min(dense, sparse)
    return total


def download_bytes(numels: Iterable[int], keep: float, min_numel: int = 1024) -> int:
    """Bytes of a model download with Caesar's codec at keep fraction `keep` (B)."""
    return _model_bytes(tuple(int(p) for p in numels), float(keep), "down", int(min_numel), 0)


def upload_bytes(numels: Iterable[int], keep: float, min_numel: int = 1024) -> int:
    """Bytes of a top-k sparsified update at keep fraction `keep` (B)."""
    return _model_bytes(tuple(int(p) for p in numels), float(keep), "up", int(min_numel), 0)


def quant_bytes(numels: Iterable[int], bits: int, min_numel: int = 1024) -> int:
    """Bytes of a stochastically quantised update at `bits` bits (B)."""
    return _model_bytes(tuple(int(p) for p in numels), 1.0, "quant", int(min_numel), int(bits))


def bytes_matrix(problem: FedCompressProblem, keep: np.ndarray, direction: str, bits: int = 0) -> np.ndarray:
    """Bytes for every (round, device) entry of `keep` (0 where keep is 0, i.e. not selected)."""
    keep = np.asarray(keep, dtype=float)
    numels = tuple(int(p) for p in problem.tensor_numels)
    mnc = int(problem.min_compress_numel)
    values, inverse = np.unique(keep, return_inverse=True)
    per_value = np.array([0.0 if v <= 0 else float(_model_bytes(numels, float(v), direction, mnc, bits))
                          for v in values])
    return per_value[inverse].reshape(keep.shape)


def compute_time_s(problem: FedCompressProblem, idx: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """τ·(a_i + b_i·β_i) for devices `idx` at batches `batch` (s)."""
    a = np.asarray(problem.iter_fixed_s, dtype=float)[idx]
    b = np.asarray(problem.iter_per_sample_s, dtype=float)[idx]
    return problem.local_iters * (a + b * np.asarray(batch, dtype=float))


def comm_time_s(problem: FedCompressProblem, idx: np.ndarray, bytes_down: np.ndarray,
                bytes_up: np.ndarray) -> np.ndarray:
    """bytes_down/BWd_i + bytes_up/BWu_i + lat_i for devices `idx` (s)."""
    return (np.asarray(bytes_down, dtype=float) / np.asarray(problem.downlink_bytes_per_s, dtype=float)[idx]
            + np.asarray(bytes_up, dtype=float) / np.asarray(problem.uplink_bytes_per_s, dtype=float)[idx]
            + np.asarray(problem.latency_s, dtype=float)[idx])


def evaluate(problem: FedCompressProblem, keep_down: np.ndarray, keep_up: np.ndarray, batch: np.ndarray,
             up_codec: str = "topk", quant_bits: int = 0) -> FedCompressMetrics:
    """The metrics of a schedule of decisions ((R, N) arrays, 0 where not selected)."""
    mask = problem.selected_mask()
    bd = bytes_matrix(problem, np.where(mask, keep_down, 0.0), "down")
    if up_codec == "quant":
        bu = np.where(mask, float(quant_bytes(problem.tensor_numels, quant_bits, problem.min_compress_numel)), 0.0)
    else:
        bu = bytes_matrix(problem, np.where(mask, 1.0 if up_codec == "dense" else keep_up, 0.0), "up")
    R, N = mask.shape
    compute = np.zeros((R, N))
    time = np.zeros((R, N))
    for r in range(R):
        idx = np.flatnonzero(mask[r])
        if idx.size == 0:
            continue
        compute[r, idx] = compute_time_s(problem, idx, np.asarray(batch)[r, idx])
        time[r, idx] = compute[r, idx] + comm_time_s(problem, idx, bd[r, idx], bu[r, idx])
    round_time = time.max(axis=1) if N else np.zeros(R)
    waiting = np.where(mask, round_time[:, None] - time, 0.0)
    samples = problem.local_iters * np.where(mask, batch, 0).sum(axis=1)
    sps = np.divide(samples, round_time, out=np.zeros(R), where=round_time > 0)
    return FedCompressMetrics(bytes_down=bd, bytes_up=bu, compute_s=compute, time_s=time, round_time_s=round_time,
                              waiting_s=waiting, traffic_bytes=(bd + bu).sum(axis=1), samples_per_s=sps)


def label_skew(label_counts: np.ndarray, reference: str = "global", smoothing: float = 1e-3) -> np.ndarray:
    """D_i = KL(Φ_i ‖ Φ_0) in nats, with `smoothing` added to every class probability and renormalised.

    Φ_0 is the population's aggregate label distribution (`reference="global"`) or uniform.
    """
    counts = np.asarray(label_counts, dtype=float)
    n = counts.sum(axis=1, keepdims=True)
    phi = np.divide(counts, n, out=np.full_like(counts, 1.0 / counts.shape[1]), where=n > 0)
    if reference == "global":
        phi0 = counts.sum(axis=0) / max(counts.sum(), 1.0)
    elif reference == "uniform":
        phi0 = np.full(counts.shape[1], 1.0 / counts.shape[1])
    else:
        raise ValueError(f"reference_dist must be 'global' or 'uniform', got {reference!r}")
    phi = (phi + smoothing) / (1.0 + smoothing * counts.shape[1])
    phi0 = (phi0 + smoothing) / (1.0 + smoothing * counts.shape[1])
    return np.sum(phi * np.log(phi / phi0[None, :]), axis=1)


def importance(samples: np.ndarray, skew: np.ndarray, form: str = "exp") -> np.ndarray:
    """𝒞_i: `(n_i / max n)·exp(−D_i)` ("exp", default) or `(n_i / Σ n) / (1 + D_i)` ("ratio")."""
    n = np.asarray(samples, dtype=float)
    d = np.asarray(skew, dtype=float)
    if form == "exp":
        return n / max(float(n.max()), 1.0) * np.exp(-d)
    if form == "ratio":
        return n / max(float(n.sum()), 1.0) / (1.0 + d)
    raise ValueError(f"importance must be 'exp' or 'ratio', got {form!r}")
