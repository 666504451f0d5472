"""The spec-serve planning problem: measured acceptance and times as dense arrays (no torch).

Index conventions (fixed by the lowering in planner/families/spec_serve): drafters `d` in the order of
`drafters`, nodes `n` in the order of `nodes` (drafter-capable nodes only; the verifier apart), domains `c` in
the order of `domains`, routing sets `s` in the order of `sets` (tuples of drafter indices, singletons first).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class SpecServeProblem:
    """Everything the CoSine planner and its baselines need.

    alpha[s, c]        measured greedy acceptance of routing set s (fused when |s| > 1) on domain c, in [0, 1)
    draft_cpu_s[d]     CPU seconds per draft token of drafter d on this machine (one thread)
    verify_cpu_s       (a, b): CPU seconds to verify T tokens of one request = a + b*T on this machine
    node_scale[n]      emulated seconds per CPU second of this machine on drafter node n (node speed, labelled)
    verifier_scale     the same for the verifier node
    link_delay_s[n]    one-way delay drafter node n <-> verifier (s); link_rate_bps[n] its rate (bit/s)
    domain_share[c]    share of requests in domain c
    """

    drafters: tuple[str, ...]
    nodes: tuple[str, ...]
    domains: tuple[str, ...]
    sets: tuple[tuple[int, ...], ...]
    alpha: np.ndarray
    draft_cpu_s: np.ndarray
    verify_cpu_s: tuple[float, float]
    node_scale: np.ndarray
    verifier_scale: float
    link_delay_s: np.ndarray
    link_rate_bps: np.ndarray
    domain_share: np.ndarray
    requests: int
    new_tokens: float                    # mean tokens generated per request
    arrival_rps: float = 0.0             # 0 = offline (all requests at once)
    gamma_max: int = 8
    max_fanout: int = 2                  # m: drafters per request at most
    verify_token_cap: int = 256          # verifier tokens per batch at most (KV/compute capacity)
    node_ok: np.ndarray = field(default_factory=lambda: np.ones(0))   # [n, d] drafter d may run on node n
    target_ok: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=bool))   # [n] node n may hold a
                                         # target replica (empty: every drafter node may)
    prefill_verify_cpu_s: float = 0.0    # verifier CPU seconds per prompt token (prefill), this machine
    prefill_draft_cpu_s: np.ndarray = field(default_factory=lambda: np.zeros(0))   # [d] the same per drafter
    prompt_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))         # [c] mean prompt tokens
    meta: Mapping[str, Any] = field(default_factory=dict)

    def set_index(self, s: tuple[int, ...]) -> int:
        return self.sets.index(tuple(sorted(s)))

    # read-only views of `meta` in the form the cost model evaluates many thousand times per search (computed once
    # per problem; cached_property writes the instance dict, which a frozen dataclass allows)
    @cached_property
    def tokens_per_verify_table(self) -> np.ndarray | None:
        """meta["tokens_per_verify"] as an array [set, domain, γ-1], or None."""
        t = self.meta.get("tokens_per_verify")
        return None if t is None else np.asarray(t, dtype=float)

    @cached_property
    def verify_batch_rows(self) -> dict[int, tuple[list[float], list[float]]]:
        """meta["verify_batch_grid"] as {B: (T values ascending, CPU seconds)}; empty without a grid."""
        rows: dict[int, list[tuple[float, float]]] = {}
        for bb, tt, ss in self.meta.get("verify_batch_grid") or []:
            rows.setdefault(int(bb), []).append((float(tt), float(ss)))
        return {b: ([x for x, _ in sorted(v)], [y for _, y in sorted(v)]) for b, v in sorted(rows.items())}
