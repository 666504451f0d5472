"""Run a set of requests through the real model under every candidate configuration (the calibration table).

Per request: one prefill of the context (timed), the full-cache answer (the reference the oracle reads), the
oracle keep sets (nucleus of the actual question + answer queries, teacher-forced), then per configuration
its keep sets (timed: GVote's overhead), the answer decoded against the ragged cache of those keep sets,
its task score and the bytes that cache held.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from codegen.kv_budget import method_record   # the runtime record the emitted artifact carries

ORACLE_P_NUC = 0.95   # nucleus mass of the oracle keep sets for rows without their own p_nuc (presses, full)


@dataclass(frozen=True)
class KvRequest:
    """One prompt: the context that is compressed, the question decoded against it, the expected answer."""

    task: str
    context_ids: tuple[int, ...]
    question_ids: tuple[int, ...]
    answer: str
    max_new_tokens: int
    ref: Any = None          # the test bed's prompt record (its scorer reads it)

    @property
    def length(self) -> int:
        return len(self.context_ids)


@dataclass
class Table:
    """What `measure` returns: arrays (rows = configs, columns = requests) and per-request outputs."""

    kv_bytes: np.ndarray
    score: np.ndarray
    select_s: np.ndarray
    recall: np.ndarray
    prefill_s: np.ndarray
    oracle_bytes: np.ndarray
    lengths: np.ndarray
    token_bytes: float
    kept_by_layer: list[list[list[float]]] = field(default_factory=list)   # [row][request][layer] kept share
    outputs: list[list[str]] = field(default_factory=list)


def measure(model: Any, decode_text: Callable[[list[int]], str], score: Callable[[KvRequest, str], float],
            requests: Sequence[KvRequest], configs: Sequence[dict[str, Any]], eos_ids: Sequence[int],
            progress: Callable[[str], None] = lambda s: None, decode_batch: int = 48) -> Table:
    """Every config on every request; see the module docstring. The configurations' answers are decoded
    `decode_batch` at a time in one batched forward per token (`evaluation.decode_batch`: each row is its own
    greedy decode against its own ragged cache; the batch shares the weight reads)."""
    import torch

    from runtime.kv_budget import evaluation as ev

    n_cfg, n_req = len(configs), len(requests)
    kv = np.zeros((n_cfg, n_req))
    sc = np.zeros((n_cfg, n_req))
    sel = np.zeros((n_cfg, n_req))
    rec = np.zeros((n_cfg, n_req))
    pre = np.zeros(n_req)
    orc = np.zeros(n_req)
    kept_layers: list[list[list[float]]] = [[] for _ in configs]
    outputs: list[list[str]] = [[] for _ in configs]
    token_bytes = 0.0
    full_row = [i for i, c in enumerate(configs) if c["method"] == "full"]
    order = full_row + [i for i in range(n_cfg) if i not in full_row]
    for j, req in enumerate(requests):
        progress(f"request {j + 1}/{n_req} ({req.task}, {req.length} tokens)")
        ctx = torch.tensor([req.context_ids])
        q = torch.tensor(list(req.question_ids), dtype=torch.long).view(1, -1)
        pf = ev.prefill(model, ctx)
        pre[j] = pf.prefill_s
        full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
        token_bytes = ev.bytes_of(full, pf) / pf.length
        ref_tokens, _, _ = ev.decode(model, pf, full, q, req.max_new_tokens, eos_ids)
        # the queries that read the compressed prompt: the question's (if fed after it) and the answer's but the last
        follow = torch.cat([q, torch.tensor([ref_tokens[:-1]], dtype=q.dtype)], dim=1)
        oracles: dict[float, list[torch.Tensor]] = {}

        def oracle(p: float) -> list[torch.Tensor]:
            if p not in oracles:
                oracles[p] = (ev.oracle_masks(model, pf, follow, p) if follow.shape[1] else
                              [torch.zeros(k.shape[:3], dtype=torch.bool) for k in pf.keys])
            return oracles[p]

        orc[j] = ev.bytes_of(oracle(ORACLE_P_NUC), pf)
        masks_of: dict[int, list[Any]] = {}
        for i in order:
            masks_of[i], sel[i, j] = ev.keep_masks(model, pf, method_record(configs[i]))
        # every entry kept (the full cache, or a press refusing a prompt shorter than its window): the same
        # decode of the same cache as the reference, so its tokens are reused, not recomputed
        # configurations with identical keep sets (e.g. two presses agreeing on a short prompt) hold the same
        # cache, so one greedy decode serves them all
        first_of: dict[bytes, int] = {}
        same_as: dict[int, int] = {}
        for i in order:
            if configs[i]["method"] == "full" or all(bool(m.all()) for m in masks_of[i]):
                continue
            key = b"".join(np.packbits(m.numpy()).tobytes() for m in masks_of[i])
            same_as[i] = first_of.setdefault(key, i)
        to_decode = sorted(set(same_as.values()), key=order.index)
        ran = dict(zip(to_decode, ev.decode_batch(model, pf, [masks_of[i] for i in to_decode], q,
                                                  req.max_new_tokens, eos_ids, batch=decode_batch)))
        decoded = {i: ran[same_as[i]] for i in same_as}
        for i in order:
            cfg, masks = configs[i], masks_of[i]
            tokens, held = (decoded[i][0], decoded[i][1]) if i in decoded else (ref_tokens, ev.bytes_of(masks, pf))
            text = decode_text(tokens)
            kv[i, j] = held
            sc[i, j] = score(req, text)
            o = oracle(float(cfg.get("p_nuc", ORACLE_P_NUC)) if cfg["method"] == "gvote" else ORACLE_P_NUC)
            hit = sum(int((m & om).sum()) for m, om in zip(masks, o))
            need = sum(int(om.sum()) for om in o)
            rec[i, j] = hit / need if need else 1.0
            kept_layers[i].append([round(float(m.float().mean()), 6) for m in masks])
            outputs[i].append(text)
    return Table(kv, sc, sel, rec, pre, orc, np.array([r.length for r in requests]), float(token_bytes),
                 kept_layers, outputs)
