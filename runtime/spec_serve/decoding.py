"""Speculative decoding mechanics: drafters, the fused proposal, verification, KV caches with rollback.

Every model side keeps one explicit KV cache per request (`transformers.DynamicCache`) and the token ids it
holds. A call names the request's whole current sequence; the side crops its cache to the longest prefix it
already holds (rollback after a rejected draft: `DynamicCache.crop`, the same mechanism transformers' candidate
generators use) and feeds only the rest. So a rejected draft never leaves stale keys behind.

Drafts are proposed as sparse distributions (the drafter's top-k renormalised). The fused proposal at a draft
position is `q = Σ_d w_d·p̃_d / Σ_d w_d` over the drafters that proposed there (CoSine's confidence fusion with
weights = acceptance estimates); greedy drafting takes `argmax q`, sampled drafting samples from `q`, and the
verifier runs standard rejection sampling against that same `q`, so sampled outputs stay distributed as the
target's. Greedy verification accepts while the target's argmax equals the draft, so greedy outputs equal
target-only greedy decoding.

    >>> # d = EarlyExitDrafter(model_k_layers); v = Verifier(target)
    >>> # probs = d.next_probs("r0", ids)                  # sparse {token: prob}
    >>> # out = v.verify("r0", ids, draft, proposals, greedy=True)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

Sparse = dict[int, float]          # token id -> probability (sums to 1)


def _crop_to_prefix(cache: Any, held: list[int], seq: Sequence[int], keep_last: bool) -> int:
    """Crop `cache` (holding tokens `held`) to its longest common prefix with `seq`; returns the kept length.
    With `keep_last`, at least the last token of `seq` is left to feed (its logits are needed)."""
    n = 0
    limit = min(len(held), len(seq) - (1 if keep_last else 0))
    while n < limit and held[n] == seq[n]:
        n += 1
    rollback(cache, held, n)
    return n


def rollback(cache: Any, held: list[int], n: int) -> None:
    """Keep the first `n` tokens of a request's KV cache (transformers 5: `crop(-k)` removes the last k)."""
    if n < len(held):
        cache.crop(n - len(held))
        del held[n:]


@dataclass
class _Seq:
    cache: Any
    held: list[int] = field(default_factory=list)


class CachedLM:
    """One causal LM with a KV cache per request; `logits_for(rid, seq, n_last)` returns the logits of the
    last `n_last` positions of `seq`, feeding only what the cache does not hold."""

    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        self.model = model
        self._cache_cls = DynamicCache
        self.seqs: dict[str, _Seq] = {}

    def _reuse(self, rid: str, seq: Sequence[int], n_last: int) -> tuple[_Seq, int]:
        """(the request's cache, n): its cache cropped to the longest held prefix of `seq` that leaves at least
        the last `n_last` tokens to feed (a new request gets an empty cache)."""
        s = self.seqs.get(rid)
        if s is None:
            s = self.seqs[rid] = _Seq(self._cache_cls(config=self.model.config))
        n = _crop_to_prefix(s.cache, s.held, seq, keep_last=True)
        n = min(n, len(seq) - n_last)
        rollback(s.cache, s.held, n)
        return s, n

    def logits_for(self, rid: str, seq: Sequence[int], n_last: int = 1) -> torch.Tensor:
        """(n_last, vocab) float32 logits predicting the tokens after seq[-n_last:] (positions len-n_last..len-1)."""
        s, n = self._reuse(rid, seq, n_last)
        new = list(seq[n:])
        ids = torch.tensor([new], dtype=torch.long)
        pos = torch.arange(n, n + len(new)).view(1, -1)
        with torch.no_grad():
            out = self.model(input_ids=ids, cache=s.cache, use_cache=True, position_ids=pos,
                             cache_position=pos[0])
        s.held.extend(new)
        return out.logits[0, -n_last:].float()

    def logits_batch(self, items: Sequence[tuple[str, Sequence[int], int]]) -> list[torch.Tensor]:
        """`logits_for` of several requests in ONE forward (batched verification): item i is (rid, seq, n_last)
        and gets the (n_last, vocab) logits of its last n_last positions.

        Each request keeps its own cache. A request whose cache lacks more than its last n_last tokens (the first
        verification after the prompt) is prefilled alone first. Then the caches are stacked left-padded to the
        longest (keys keep the RoPE rotation of their own positions, so a key's column does not matter), the
        n_last new tokens of each row right-padded, and one forward runs with per-row position ids and a 4-D
        additive mask: row i's query at its j-th new token sees row i's real past keys and its own new tokens up
        to j, never a pad. Each row's keys and values are then cut back out into its own cache. Exact up to the
        float rounding of a batched matmul (tests check greedy outputs equal the unbatched ones)."""
        if len(items) == 1:
            rid, seq, n_last = items[0]
            return [self.logits_for(rid, seq, n_last)]
        from transformers import DynamicCache

        rows = []
        for rid, seq, n_last in items:
            s, n = self._reuse(rid, seq, n_last)
            if n < len(seq) - n_last:          # prefill the rest of the prefix alone (its logits are not needed)
                self.logits_for(rid, list(seq[:len(seq) - n_last]), 1)
            rows.append((s, list(seq[len(seq) - n_last:]), len(seq) - n_last))
        b = len(rows)
        lmax = max(past for _, _, past in rows)
        tmax = max(len(new) for _, new, _ in rows)
        ids = torch.zeros((b, tmax), dtype=torch.long)
        pos = torch.zeros((b, tmax), dtype=torch.long)
        allowed = torch.zeros((b, tmax, lmax + tmax), dtype=torch.bool)
        causal = torch.tril(torch.ones((tmax, tmax), dtype=torch.bool))
        for i, (s, new, past) in enumerate(rows):
            ids[i, :len(new)] = torch.tensor(new)
            pos[i] = torch.arange(past, past + tmax)
            allowed[i, :, lmax - past:lmax] = True
            allowed[i, :, lmax:] = causal
            allowed[i, :, lmax + len(new):] = False
            allowed[i, len(new):, lmax - past:lmax] = True      # pad queries: any real key (output ignored)
        mask = torch.zeros((b, 1, tmax, lmax + tmax), dtype=torch.float32)
        mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(torch.float32).min)
        n_layers = len(rows[0][0].cache.layers)
        batch = DynamicCache(config=self.model.config)
        for layer in range(n_layers):
            ks, vs = [], []
            for s, _, past in rows:
                lay = s.cache.layers[layer]
                k, v = lay.keys, lay.values
                pad = lmax - past
                if pad:
                    k = torch.nn.functional.pad(k, (0, 0, pad, 0))
                    v = torch.nn.functional.pad(v, (0, 0, pad, 0))
                ks.append(k)
                vs.append(v)
            batch.update(torch.cat(ks, 0), torch.cat(vs, 0), layer)
        with torch.no_grad():
            out = self.model(input_ids=ids, cache=batch, use_cache=True, position_ids=pos, attention_mask=mask)
        logits = []
        for i, (s, new, past) in enumerate(rows):
            own = DynamicCache(config=self.model.config)
            for layer in range(n_layers):
                lay = batch.layers[layer]
                own.update(lay.keys[i:i + 1, :, lmax - past:lmax + len(new)].contiguous(),
                           lay.values[i:i + 1, :, lmax - past:lmax + len(new)].contiguous(), layer)
            s.cache = own
            s.held.extend(new)
            logits.append(out.logits[i, :len(new)].float())
        return logits

    def held(self, rid: str) -> int:
        """Tokens the request's cache holds (for tests of rollback)."""
        s = self.seqs.get(rid)
        return 0 if s is None else s.cache.get_seq_length()

    def release(self, rid: str) -> None:
        """Drop the request's cache."""
        self.seqs.pop(rid, None)


def sparse_top_k(logits: torch.Tensor, k: int, temperature: float = 1.0) -> Sparse:
    """The top-k of softmax(logits / T), renormalised (ties broken by the lower token id, deterministic)."""
    p = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
    vals, idx = torch.topk(p, k)
    total = float(vals.sum())
    out: Sparse = {}
    for v, i in zip(vals.tolist(), idx.tolist()):
        out[int(i)] = v / total
    return out


class EarlyExitDrafter:
    """The target's first k layers with its final norm and head (a truncated model, no training)."""

    kind = "early_exit"

    def __init__(self, model: Any, top_k: int = 8) -> None:
        self.lm = CachedLM(model)
        self.top_k = top_k

    def next_probs(self, rid: str, seq: Sequence[int], temperature: float = 1.0) -> Sparse:
        """Sparse next-token distribution after `seq`."""
        return sparse_top_k(self.lm.logits_for(rid, seq, 1)[0], self.top_k, temperature)

    def release(self, rid: str) -> None:
        self.lm.release(rid)


class NgramDrafter:
    """Prompt lookup: the token that followed the latest earlier occurrence of the sequence's last n tokens
    (n from `max_n` down to `min_n`), proposed with probability 1; nothing when no n-gram recurs."""

    kind = "ngram"

    def __init__(self, max_n: int = 3, min_n: int = 1) -> None:
        self.max_n, self.min_n = max_n, min_n

    def next_probs(self, rid: str, seq: Sequence[int], temperature: float = 1.0) -> Sparse:
        s = list(seq)
        for n in range(self.max_n, self.min_n - 1, -1):
            if len(s) <= n:
                continue
            tail = s[-n:]
            for start in range(len(s) - n - 1, -1, -1):     # latest earlier occurrence first
                if s[start:start + n] == tail:
                    return {int(s[start + n]): 1.0}
        return {}

    def release(self, rid: str) -> None:
        pass


def fuse(proposals: Sequence[Sparse], weights: Sequence[float]) -> Sparse:
    """The fused proposal `Σ w_d p_d / Σ w_d` over the drafters that proposed (empty ones are left out)."""
    total = sum(w for p, w in zip(proposals, weights) if p)
    out: Sparse = {}
    if total <= 0:
        return out
    for p, w in zip(proposals, weights):
        for t, v in p.items():
            out[t] = out.get(t, 0.0) + w * v / total
    return out


def pick(q: Sparse, greedy: bool, gen: torch.Generator | None) -> int:
    """argmax of q (ties: lower id) or a sample from q."""
    items = sorted(q.items())
    if greedy:
        return max(items, key=lambda kv: (kv[1], -kv[0]))[0]
    probs = torch.tensor([v for _, v in items], dtype=torch.float64)
    return items[int(torch.multinomial(probs, 1, generator=gen))][0]


@dataclass
class VerifyResult:
    """What one verification of one request's draft produced."""

    tokens: list[int]          # accepted draft tokens + the target's token after them
    accepted: int              # draft tokens accepted (0..len(draft))
    cpu_s: float               # thread CPU time of the forward and the checks


class Verifier:
    """The target model: verifies drafts (greedy match or rejection sampling against the fused proposal)."""

    def __init__(self, model: Any, temperature: float = 1.0) -> None:
        self.lm = CachedLM(model)
        self.temperature = temperature

    def verify(self, rid: str, seq: Sequence[int], draft: Sequence[int], proposals: Sequence[Sparse],
               greedy: bool, seed: int = 0) -> VerifyResult:
        """One forward over the last committed token and the draft; `proposals[i]` is the q the draft token
        `draft[i]` was drawn from (only read when sampling)."""
        t0 = time.thread_time()
        full = list(seq) + list(draft)
        logits = self.lm.logits_for(rid, full, len(draft) + 1)          # (γ+1, vocab)
        toks, k = self._accept(logits, draft, proposals, greedy, seed)
        self._keep(rid, len(seq) + k)
        return VerifyResult(toks, k, time.thread_time() - t0)

    def verify_batch(self, items: Sequence[tuple[str, Sequence[int], Sequence[int], Sequence[Sparse], bool, int]]
                     ) -> tuple[list[VerifyResult], float]:
        """Several requests' drafts verified in ONE forward (`CachedLM.logits_batch`); item = (rid, seq, draft,
        proposals, greedy, seed). Returns each request's result (its cpu_s is 0) and the batch's thread CPU
        seconds."""
        t0 = time.thread_time()
        logits = self.lm.logits_batch([(rid, list(seq) + list(draft), len(draft) + 1)
                                       for rid, seq, draft, _, _, _ in items])
        out = []
        for (rid, seq, draft, props, greedy, seed), lg in zip(items, logits):
            toks, k = self._accept(lg, draft, props, greedy, seed)
            self._keep(rid, len(seq) + k)
            out.append(VerifyResult(toks, k, 0.0))
        return out, time.thread_time() - t0

    def _keep(self, rid: str, keep: int) -> None:
        """Roll the cache back to the accepted prefix: the next call names seq + out, whose last token is new."""
        s = self.lm.seqs[rid]
        rollback(s.cache, s.held, keep)

    def _accept(self, logits: torch.Tensor, draft: Sequence[int], proposals: Sequence[Sparse], greedy: bool,
                seed: int) -> tuple[list[int], int]:
        """Greedy match or rejection sampling of `draft` against the target's (γ+1, vocab) logits; returns
        (accepted draft tokens + the target's token after them, accepted count)."""
        gen = torch.Generator().manual_seed(int(seed))
        if greedy:
            target = torch.argmax(logits, dim=-1).tolist()
            k = 0
            while k < len(draft) and target[k] == draft[k]:
                k += 1
            return list(draft[:k]) + [int(target[k])], k
        p_all = torch.softmax(logits.double() / self.temperature, dim=-1)
        k = 0
        bonus = None
        while k < len(draft):
            x, q = int(draft[k]), proposals[k]
            p = p_all[k]
            qx = q.get(x, 0.0)
            r = float(torch.rand(1, generator=gen, dtype=torch.float64))
            if qx > 0 and r < min(1.0, float(p[x]) / qx):
                k += 1
                continue
            resid = p.clone()
            for t, v in q.items():
                resid[t] = resid[t] - v
            resid = torch.clamp(resid, min=0.0)
            if float(resid.sum()) <= 0:        # p == q: any sample of p is right
                resid = p
            bonus = int(torch.multinomial(resid / resid.sum(), 1, generator=gen))
            break
        if bonus is None:
            bonus = int(torch.multinomial(p_all[len(draft)], 1, generator=gen))
        return list(draft[:k]) + [bonus], k

    def release(self, rid: str) -> None:
        self.lm.release(rid)


def draft_tokens(drafters: Sequence[Any], weights: Sequence[float], rid: str, seq: Sequence[int], gamma: int,
                 greedy: bool, gen: torch.Generator | None, tau_conf: float = 0.0,
                 temperature: float = 1.0) -> tuple[list[int], list[Sparse], list[float]]:
    """Up to `gamma` fused draft tokens after `seq` (in-process drafters). Stops early when no drafter proposes or
    the fused confidence `max q` falls below `tau_conf`. Returns (tokens, proposals, per-drafter CPU seconds)."""
    cur = list(seq)
    toks: list[int] = []
    qs: list[Sparse] = []
    cpu = [0.0] * len(drafters)
    for _ in range(gamma):
        props = []
        for j, d in enumerate(drafters):
            t0 = time.thread_time()
            props.append(d.next_probs(rid, cur, temperature))
            cpu[j] += time.thread_time() - t0
        q = fuse(props, weights)
        if not q or max(q.values()) < tau_conf:
            break
        x = pick(q, greedy, gen)
        toks.append(x)
        qs.append(q)
        cur.append(x)
    return toks, qs, cpu


def target_only_greedy(model: Any, ids: Sequence[int], max_new_tokens: int, eos: Sequence[int] = ()) -> list[int]:
    """Reference: plain greedy decoding one token per forward with a KV cache."""
    lm = CachedLM(model)
    seq = list(ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        t = int(torch.argmax(lm.logits_for("ref", seq, 1)[0]))
        out.append(t)
        seq.append(t)
        if t in eos:
            break
    return out


def commit(out: list[int], new: Sequence[int], max_new_tokens: int, eos: Sequence[int]) -> tuple[list[int], bool]:
    """Append verified tokens to a request's output, cut at EOS or the length limit; returns (added, done)."""
    added = []
    for t in new:
        if len(out) >= max_new_tokens:
            break
        out.append(int(t))
        added.append(int(t))
        if t in eos:
            return added, True
    return added, len(out) >= max_new_tokens


def as_mapping(x: Mapping[int, float]) -> Sparse:
    """A proposal with int keys (after a transport that stringified them)."""
    return {int(k): float(v) for k, v in x.items()}
