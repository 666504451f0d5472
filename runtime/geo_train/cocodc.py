"""CoCoDC on torchft: Streaming DiLoCo (`torchft.local_sgd.DiLoCo`) with delay compensation and adaptive
fragment choice.

torchft's DiLoCo runs the algorithm as hooks on the inner optimizer's `step`: every h inner steps one
fragment's pseudo-gradient is all-reduced (`prepare_sync`, sent tau steps before the slot ends) and the
outer optimizer applies it when the slot ends (`perform_sync`), then `_merge_parameters` mixes the new
global fragment with the local one (alpha blend). CoCoDC changes two small methods:

  * `_current_fragment`: the adaptive rule of `runtime.geo_train.choice` (deadline-feasible; due, never
    sent, else the largest drift score). Drift scores are all-reduced (SUM) in the background one slot
    ahead, so every region sees the same numbers and picks the same fragment.
  * the fragment's `_merge_parameters`: the first-order Taylor compensation (spec section 5; bounded
    form, see `taylor_compensate`)
        g1   = theta(t_s) - theta(now)             local change while the fragment was in flight
        D    = theta_glob - theta(t_s)             global change the fragment brought
        coef = clamp(lam0 * g1*g1 / kappa, 0, 1)   kappa: mean of g1*g1 over the fragment (auto)
        theta(now) <- theta_glob - (g1 + coef * D)
    With tau = 0, g1 = 0: the guard gives coef = 0 and the update is theta_glob, torchft's synchronous
    (alpha = 0) update exactly.

With `adaptive=False` the choice is torchft's own round-robin (`manager.current_step() % P`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from torch.distributed import ReduceOp
from torch import nn, optim
from torchft.local_sgd import DiLoCo, _StreamingDiLoCoFragment, extract_local_tensor
from torchft.manager import Manager

from runtime.geo_train.choice import choose_fragment, drift_score

log = logging.getLogger(__name__)


@dataclass
class CompensationLog:
    """Per sync: the fragment, the lambda used and the norms behind it."""

    fragment: list[int] = field(default_factory=list)
    lam: list[float] = field(default_factory=list)
    g1_norm: list[float] = field(default_factory=list)


def taylor_merge(theta_glob: list[torch.Tensor], theta_sent: list[torch.Tensor], theta_now: list[torch.Tensor],
                 coef: list[torch.Tensor]) -> list[torch.Tensor]:
    """theta_glob - (g1 + coef * D): the delayed local change re-applied at the global point, its first-order
    correction `coef * D` (coef = tau * eta * diag Hessian for tau plain SGD steps of size eta) subtracted.

    g1 = theta_sent - theta_now (the local change made while the fragment was in flight) and
    D = theta_glob - theta_sent (what the sync moved this region's fragment by). On a quadratic with
    Hessian A the synchronous answer (tau steps from theta_glob) is theta_now + (I - eta A)^tau D, so
    coef = tau * eta * diag(A) is exact to first order; coef = 0 keeps the zeroth-order term only.
    """
    return [gl - (s - n) - c * (gl - s) for gl, s, n, c in zip(theta_glob, theta_sent, theta_now, coef)]


def taylor_compensate(theta_glob: list[torch.Tensor], theta_sent: list[torch.Tensor], theta_now: list[torch.Tensor],
                      lam0: float, kappa: float = 0.0) -> tuple[list[torch.Tensor], float, float]:
    """CoCoDC's merge, bounded form [design]: the compensated fragment, the mean coefficient and ||g1||.

    The curvature is DC-ASGD's diagonal proxy g1*g1, scaled by kappa (kappa <= 0: auto, the fragment's mean
    of g1*g1, so lam0 is the mean share of D the correction takes back), and clamped to [0, 1] per entry,
    the range of the exact quadratic correction 1 - (1 - eta a)^tau for any stable inner step:
        coef = clamp(lam0 * g1*g1 / kappa, 0, 1);   theta <- theta_glob - (g1 + coef * D)
    Guard: coef = 0 where kappa = 0 (g1 = 0: tau = 0 or no local change), so tau = 0 gives theta_glob.
    The correction vanishes with D (first-order consistent), unlike the summary's norm-matched lambda
    (`taylor_compensate_norm_matched`) whose correction keeps the norm lam0 * ||g1|| however small D is.
    """
    g1 = [s - n for s, n in zip(theta_sent, theta_now)]
    sq = [g * g for g in g1]
    numel = sum(int(g.numel()) for g in g1)
    g1_norm = float(torch.sqrt(sum(torch.sum(q) for q in sq)))
    scale = float(kappa) if kappa > 0 else g1_norm ** 2 / max(numel, 1)
    if scale <= 0.0 or lam0 <= 0.0 or g1_norm == 0.0:      # guard
        coef = [torch.zeros_like(g) for g in g1]
    else:
        coef = [torch.clamp(lam0 * q / scale, 0.0, 1.0) for q in sq]
    mean_coef = float(sum(torch.sum(c) for c in coef)) / max(numel, 1)
    return taylor_merge(theta_glob, theta_sent, theta_now, coef), mean_coef, g1_norm


def taylor_compensate_norm_matched(theta_glob: list[torch.Tensor], theta_sent: list[torch.Tensor],
                                   theta_now: list[torch.Tensor], lam0: float,
                                   kappa: float = 4e-4) -> tuple[list[torch.Tensor], float, float]:
    """The spec summary's form, kept as a diagnostic: lambda = lam0 * ||g1|| / ||g1*g1*D/kappa|| (0 when the
    denominator is 0), theta <- theta_glob - (g1 + lambda * g1*g1*D/kappa). kappa cancels; the correction
    always has norm lam0 * ||g1||, whatever the size of D (see `taylor_compensate`)."""
    g1 = [s - n for s, n in zip(theta_sent, theta_now)]
    kappa = kappa if kappa > 0 else 1.0           # it cancels; "auto" (0) must not divide by zero
    curv = [g * g * (gl - s) / kappa for g, gl, s in zip(g1, theta_glob, theta_sent)]
    g1_norm = float(torch.sqrt(sum(torch.sum(g * g) for g in g1)))
    den = float(torch.sqrt(sum(torch.sum(c * c) for c in curv)))
    lam = lam0 * g1_norm / den if den > 0.0 else 0.0
    return [gl - (g + lam * c) for gl, g, c in zip(theta_glob, g1, curv)], lam, g1_norm


class _CoCoDCFragment(_StreamingDiLoCoFragment):
    """A Streaming DiLoCo fragment whose merge is the Taylor compensation."""

    lam0: float = 1.0
    kappa: float = 0.0
    form: str = "bounded"
    comp_log: Optional[CompensationLog] = None

    def prepare_sync(self) -> None:
        # theta(t_s): the local fragment at the moment it is sent
        with torch.no_grad():
            self._sent_parameters = {n: extract_local_tensor(p.data) for n, p in self._model_fragment.named_parameters()}
        super().prepare_sync()

    def _merge_parameters(self) -> None:
        names = [n for n, _ in self._model_fragment.named_parameters()]
        params = dict(self._model_fragment.named_parameters())
        with torch.no_grad():
            glob = [params[n].data for n in names]
            merge = taylor_compensate if self.form == "bounded" else taylor_compensate_norm_matched
            new, lam, g1n = merge(glob, [self._sent_parameters[n] for n in names],
                                  [self._local_parameters[n] for n in names], self.lam0, self.kappa)
            for n, t in zip(names, new):
                params[n].data.copy_(t)
        if self.comp_log is not None:
            self.comp_log.fragment.append(self._fragment_id)
            self.comp_log.lam.append(lam)
            self.comp_log.g1_norm.append(g1n)
        self._sent_parameters = {}


class CoCoDC(DiLoCo):
    """CoCoDC: `DiLoCo` with P fragments, N = H / h slots per window of H inner steps, tau steps in flight.

    Args beyond torchft's: `sync_every` is H; `slots_per_window` N (P <= N, H % N == 0); `lam0`, `kappa`
    the compensation; `adaptive` the fragment rule (False: torchft's round-robin);
    `compensate` (False: torchft's alpha blend, for ablations that keep only the adaptive choice);
    `compensation` the merge's form: "bounded" (`taylor_compensate`, default) or "norm-matched" (the spec
    summary's lambda, `taylor_compensate_norm_matched`, a diagnostic).
    """

    def __init__(self, manager: Manager, model_fragments: List[nn.Module], inner_optimizer: optim.Optimizer,
                 outer_optimizer: optim.Optimizer | list[optim.Optimizer], sync_every: int, slots_per_window: int,
                 fragment_sync_delay: int = 0, fragment_update_alpha: float = 0.0, lam0: float = 1.0,
                 kappa: float = 0.0, adaptive: bool = True, compensate: bool = True,
                 compensation: str = "bounded", **kwargs: Any) -> None:
        if compensation not in ("bounded", "norm-matched"):
            raise ValueError(f"unknown compensation form {compensation!r}: use 'bounded' or 'norm-matched'")
        n_frag = len(model_fragments)
        if slots_per_window < n_frag:
            raise ValueError(f"{n_frag} fragments need at least {n_frag} slots per window, got {slots_per_window}")
        if sync_every % slots_per_window:
            raise ValueError(f"H={sync_every} is not a multiple of N={slots_per_window}")
        slot = sync_every // slots_per_window
        # torchft divides its sync_every by the fragment count to get the slot; hand it P * h
        super().__init__(manager, model_fragments, inner_optimizer, outer_optimizer, slot * n_frag,
                         fragment_sync_delay=fragment_sync_delay, fragment_update_alpha=fragment_update_alpha, **kwargs)
        self.window_steps = sync_every
        self.slots_per_window = slots_per_window
        self.adaptive = adaptive
        self.comp_log = CompensationLog()
        self.choices: list[int] = []
        if compensate:
            for f in self._fragments:
                f.__class__ = _CoCoDCFragment      # same state, the merge overridden (torchft builds the fragments)
                f.lam0, f.kappa, f.form, f.comp_log = float(lam0), float(kappa), compensation, self.comp_log
        self._numels = [sum(p.numel() for p in m.parameters()) for m in model_fragments]
        self._last_sent = [-1] * n_frag
        self._chosen: Optional[int] = None
        self._scores = torch.zeros(n_frag, dtype=torch.float64)
        self._score_work: Any = None

    # ------------------------------------------------------------------ fragment choice
    def _local_drift(self) -> torch.Tensor:
        """This region's ||base_p - theta_p||_1 per fragment (float64)."""
        out = torch.zeros(len(self._fragments), dtype=torch.float64)
        with torch.no_grad():
            for i, f in enumerate(self._fragments):
                for name, p in f._model_fragment.named_parameters():
                    out[i] += float(torch.sum(torch.abs(f.original_parameters[name] - extract_local_tensor(p.data))))
        return out

    def _current_fragment(self) -> int:
        # torchft asks twice per slot: at the send point (prepare) and at the slot's end (perform);
        # with tau = 0 both in the same step. Decide on the first call, answer the second from the record.
        if self._chosen is not None:
            chosen, self._chosen = self._chosen, None
            return chosen
        slot = self._manager.current_step()
        if not self.adaptive:
            chosen = super()._current_fragment()
        else:
            sums = self._scores
            if self._score_work is not None:
                self._score_work.wait()
                sums = self._score_buf.clone()
            scores = [drift_score(float(sums[p]), (slot - self._last_sent[p]) * self._sync_every, self._numels[p])
                      for p in range(len(self._fragments))]
            chosen = choose_fragment(slot, self._last_sent, scores, self.slots_per_window)
            # next slot's scores: all-reduced in the background while this slot's compute runs
            self._score_buf = self._local_drift()
            self._score_work = self._manager.allreduce(self._score_buf, reduce_op=ReduceOp.SUM)
        self._last_sent[chosen] = slot
        self.choices.append(chosen)
        self._chosen = chosen
        return chosen
