"""COACH's semantic cache on the edge (docs/split-inference.md §5): per-label centres of the cut feature; a request whose
feature is close enough to one centre is answered at the edge, without the link or the cloud.

Offline (at emit time, on calibration data, through the emitted edge half):
  * feature z = the cut tensor pooled and L2-normalised: global average pool over space/tokens; when the
    cut has few channels (an image input) the pool keeps a small spatial grid instead, so z has at least
    `MIN_FEATURE_DIMS` values (a global pool of a 1-channel image would keep one number);
  * centre c_k per label k: normalised mean of the class's features, recomputed over the
    `keep_ratio` (0.7) most typical of them (highest cosine to the first mean), normalised again;
  * margin m = (s_1 − s_2) / (|s_1| + |s_2| + 1e-8) with s = cos(z, c_k) sorted; the threshold τ is the
    lowest margin above which the top centre agrees with the model's own output on at least
    `target_precision` (0.95) of calibration samples (∞ when no threshold reaches it).
Online: m ≥ τ → a hit, answered with the top centre's label. With more than `MAX_CONTEXT_LABELS` (100)
classes only the `CONTEXT_SIZE` (64) labels most recently predicted are candidates (streams are
temporally local); with fewer, every label is.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

MIN_FEATURE_DIMS = 64
MAX_CONTEXT_LABELS = 100
CONTEXT_SIZE = 64


def cut_feature(x: torch.Tensor) -> torch.Tensor:
    """(N, d) L2-normalised pooled features of a cut tensor with N samples."""
    x = x.detach().float()
    if x.dim() == 4:
        c, h, w = x.shape[1:]
        g = max(1, min(h, w, math.ceil(math.sqrt(MIN_FEATURE_DIMS / max(c, 1)))))
        z = torch.nn.functional.adaptive_avg_pool2d(x, g).flatten(1)
    elif x.dim() == 3:
        z = x.mean(1)
    elif x.dim() >= 2:
        z = x.flatten(1)
    else:
        z = x.reshape(x.shape[0] if x.dim() else 1, -1)
    return torch.nn.functional.normalize(z, dim=-1)


def fit_centres(features: torch.Tensor, labels: torch.Tensor, keep_ratio: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (K, d), their labels (K,)) from normalised features and integer labels."""
    centres, present = [], []
    for k in torch.unique(labels).tolist():
        f = features[labels == k]
        c = torch.nn.functional.normalize(f.mean(0), dim=0)
        keep = max(1, int(round(keep_ratio * len(f))))
        typical = f[torch.argsort(f @ c, descending=True)[:keep]]
        centres.append(torch.nn.functional.normalize(typical.mean(0), dim=0))
        present.append(int(k))
    return torch.stack(centres), torch.tensor(present, dtype=torch.int64)


def margins(features: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the top centre, margin) per feature row."""
    s = features @ centres.T
    if s.shape[1] == 1:
        return torch.zeros(len(s), dtype=torch.int64), torch.ones(len(s))
    top = torch.topk(s, 2, dim=1)
    s1, s2 = top.values[:, 0], top.values[:, 1]
    return top.indices[:, 0], (s1 - s2) / (s1.abs() + s2.abs() + 1e-8)


def calibrate_threshold(margin: torch.Tensor, agree: torch.Tensor, target_precision: float = 0.95,
                        min_hits: int = 5) -> float:
    """Lowest margin τ with precision(top centre == model output | m ≥ τ) ≥ target over ≥ min_hits samples."""
    order = torch.argsort(margin, descending=True)
    m = margin[order]
    ok = agree[order].float()
    prec = torch.cumsum(ok, 0) / torch.arange(1, len(ok) + 1)
    best = math.inf
    for i in range(len(m)):
        if i + 1 >= min_hits and prec[i] >= target_precision and (i + 1 == len(m) or m[i + 1] < m[i]):
            best = float(m[i])
    return best


@dataclass
class SemanticCache:
    """Centres, their labels and the hit threshold of one partition's cut feature."""

    centres: torch.Tensor
    labels: torch.Tensor
    tau: float
    num_classes: int
    recent: "OrderedDict[int, None]" = field(default_factory=OrderedDict)
    hits: int = 0
    lookups: int = 0

    def _candidates(self) -> torch.Tensor:
        if self.num_classes <= MAX_CONTEXT_LABELS:
            return torch.arange(len(self.labels))
        keep = [i for i, k in enumerate(self.labels.tolist()) if k in self.recent]
        return torch.tensor(keep, dtype=torch.int64)

    def lookup(self, cut: torch.Tensor) -> tuple[int | None, float]:
        """(label answered at the edge, margin) for one request's cut tensor; label None on a miss."""
        self.lookups += 1
        idx = self._candidates()
        if len(idx) == 0 or not math.isfinite(self.tau):
            return None, 0.0
        z = cut_feature(cut)[:1]
        top, m = margins(z, self.centres[idx])
        margin = float(m[0])
        if margin < self.tau:
            return None, margin
        self.hits += 1
        return int(self.labels[idx[int(top[0])]]), margin

    def observe(self, label: int) -> None:
        """Record a predicted label in the context (most recent last)."""
        self.recent.pop(label, None)
        self.recent[label] = None
        while len(self.recent) > CONTEXT_SIZE:
            self.recent.popitem(last=False)
